"""Low-level supervision (Søgaard & Goldberg 2016): a task's loss reaches only the layers up to its depth."""
from __future__ import annotations

import pytest
import torch

from sharing._helpers import batch, losses, mlp, tasks
from taskloom.sharing import build_low_level


def test_a_low_task_gets_no_gradient_from_layers_above_its_depth():
    torch.manual_seed(0)
    model = build_low_level(mlp, tasks(), depths={"sign": 3})
    layers = [m for stage in model.stages for m in stage]
    below = [p for m in layers[:3] for p in m.parameters()]
    above = [p for m in layers[3:] for p in m.parameters()]
    all_losses = losses(model, batch())
    grads = torch.autograd.grad(all_losses["sign"], below + above, allow_unused=True, retain_graph=True)
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads[: len(below)])
    assert all(g is None for g in grads[len(below):])
    grads = torch.autograd.grad(all_losses["level"], below + above)
    assert all(bool(g.abs().sum() > 0) for g in grads)


def test_heads_read_the_trunk_at_their_depth():
    model = build_low_level(mlp, tasks(), depths={"sign": 3})
    assert model.heads["sign"].in_features == 16 and model.heads["level"].in_features == 12
    x = batch().inputs
    assert torch.equal(model(x)["sign"], model.heads["sign"](model.stages[0](x)))


def test_the_trunk_stops_at_the_deepest_tap_and_bad_depths_are_refused():
    model = build_low_level(mlp, tasks(), depths={"sign": 3, "quadrant": 3, "level": 3})
    assert sum(len(s) for s in model.stages) == 3
    with pytest.raises(ValueError, match="low_level.depths.sign"):
        build_low_level(mlp, tasks(), depths={"sign": 9})
    with pytest.raises(ValueError, match="unknown task"):
        build_low_level(mlp, tasks(), depths={"nope": 3})
    with pytest.raises(ValueError, match="width"):
        build_low_level(mlp, tasks(), depths={"sign": 1})
