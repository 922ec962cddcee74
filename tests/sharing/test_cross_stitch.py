"""Cross-stitch units (Misra et al. 2016): identity units give independent towers; the paper's init."""
from __future__ import annotations

import pytest
import torch

from sharing._helpers import batch, mlp, tasks
from taskloom.sharing import CrossStitchUnit, build_cross_stitch


def test_identity_units_reproduce_independent_towers_exactly():
    torch.manual_seed(0)
    model = build_cross_stitch(mlp, tasks(), identity=True)
    x = batch().inputs
    outputs = model(x)
    for name in model.task_names:
        h = x
        for stage in model.stages[name]:
            h = stage(h)
        assert torch.equal(outputs[name], model.heads[name](h))


def test_default_init_is_the_papers_generalized_to_k_tasks():
    unit = CrossStitchUnit(3, alpha_self=0.9, alpha_other=0.05)
    assert torch.allclose(unit.alpha, torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]))
    model = build_cross_stitch(mlp, tasks())
    alpha = model.units[0].alpha
    assert torch.allclose(alpha.sum(1), torch.ones(3)) and torch.allclose(alpha.diagonal(), torch.full((3,), 0.9))
    two = build_cross_stitch(mlp, tasks()[:2])
    assert torch.allclose(two.units[0].alpha, torch.tensor([[0.9, 0.1], [0.1, 0.9]]))


def test_unit_mixes_activations_linearly():
    unit = CrossStitchUnit(2, 0.7, 0.2)
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    mixed = unit([a, b])
    assert torch.allclose(mixed[0], 0.7 * a + 0.2 * b) and torch.allclose(mixed[1], 0.2 * a + 0.7 * b)


def test_units_sit_after_the_chosen_layers():
    model = build_cross_stitch(mlp, tasks(), after=[2, 3])
    assert len(model.units) == 2 and [len(s) for s in model.stages["sign"]] == [2, 1, 2]
    with pytest.raises(ValueError, match="cross_stitch.after"):
        build_cross_stitch(mlp, tasks(), after=[5])
