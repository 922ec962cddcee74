"""Adding a task to a trained model leaves the old tasks' predictions bit-identical."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sharing._helpers import batch, mlp, tasks, total_loss
from taskloom.sharing import (
    MultiTaskModel, add_task, build_cross_stitch, build_dselect_k, build_hard, build_hybrid, build_low_level, build_mmoe, build_mtan, build_soft,
    remove_task,
)
from taskloom.task import Task

NEW = Task("level", "regression")
OLD = tasks()[:2]


def bn_trunk() -> nn.Module:
    trunk = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
    trunk.out_features = 16
    return trunk


BUILDERS = {
    "hard": lambda: build_hard(mlp, OLD),
    "hard_batchnorm": lambda: MultiTaskModel(bn_trunk(), OLD),
    "low_level": lambda: build_low_level(mlp, OLD, depths={"sign": 3}),
    "soft": lambda: build_soft(mlp, OLD, strength=0.1),
    "hybrid": lambda: build_hybrid(mlp, OLD, strength=0.1),
    "mmoe": lambda: build_mmoe(mlp, OLD, num_experts=2),
    "mtan": lambda: build_mtan(mlp, OLD),
    "dselect_k": lambda: build_dselect_k(mlp, OLD, num_experts=2, k=2),
    "dselect_k_input": lambda: build_dselect_k(mlp, OLD, gate="input"),
}


def train(model, steps, task_list):
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        total_loss(model, batch(32, seed=step), task_list).backward()
        optimizer.step()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_training_the_new_task_leaves_old_predictions_bit_identical(name):
    torch.manual_seed(0)
    model = BUILDERS[name]()
    train(model, 5, OLD)
    x = batch(50, seed=99).inputs
    model.eval()
    before = {k: v.clone() for k, v in model(x).items()}
    add_task(model, NEW, **({"depth": 3} if name == "low_level" else {}))
    trainable = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in trainable]
    assert trainable and all(model.task_parameters(n) == [] for n in ("sign", "quadrant"))
    assert {id(p) for p in trainable} == {id(p) for p in model.task_parameters("level")}
    train(model, 10, [NEW])
    model.eval()
    after = model(x)
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{name}: task {k} changed"
    assert after["level"].shape == (50, 1)
    assert all(not torch.equal(p, s) for p, s in zip(trainable, start))


def test_removing_a_soft_task_leaves_the_others_untouched():
    model = build_soft(mlp, tasks())
    x = batch().inputs
    before = model(x)
    remove_task(model, "quadrant")
    after = model(x)
    assert list(after) == ["sign", "level"]
    assert all(torch.equal(after[k], before[k]) for k in after)


REMOVABLE = {
    "hybrid": lambda: build_hybrid(mlp, tasks(), strength=0.1),
    "mmoe": lambda: build_mmoe(mlp, tasks(), num_experts=2),
    "mtan": lambda: build_mtan(mlp, tasks()),
    "dselect_k": lambda: build_dselect_k(mlp, tasks()),
    "low_level": lambda: build_low_level(mlp, tasks(), depths={"sign": 3, "quadrant": 3}),
}


@pytest.mark.parametrize("name", list(REMOVABLE))
@pytest.mark.parametrize("removed", ["quadrant", "level"])
def test_removing_a_task_leaves_the_others_untouched(name, removed):
    torch.manual_seed(0)
    model = REMOVABLE[name]()
    x = batch().inputs
    before = model(x)
    remove_task(model, removed)
    after = model(x)
    assert list(after) == [n for n in ("sign", "quadrant", "level") if n != removed]
    assert all(torch.equal(after[k], before[k]) for k in after)
    roles = {id(p) for p in model.shared_parameters()}.union(*[{id(p) for p in model.task_parameters(n)}
                                                               for n in model.task_names])
    assert roles == {id(p) for p in model.parameters() if p.requires_grad}  # nothing left that no loss reaches
    total_loss(model, batch()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_removing_the_only_top_task_of_low_level_drops_the_trunk_above():
    torch.manual_seed(0)
    model = build_low_level(mlp, tasks(), depths={"sign": 3, "quadrant": 3})
    top_stage = sum(p.numel() for p in model.stages[-1].parameters())
    before = sum(p.numel() for p in model.parameters())
    remove_task(model, "level")  # the only task at depth 5
    assert model.stage_ends == [3]
    assert sum(p.numel() for p in model.parameters()) == before - top_stage - 13  # the stage and level's head
    with pytest.raises(ValueError, match="only task"):
        remove_task(remove_task(model, "quadrant"), "sign")


def test_add_task_refuses_duplicates_and_unsupported_architectures():
    with pytest.raises(ValueError, match="already has"):
        add_task(build_hard(mlp, OLD), OLD[0])
    with pytest.raises(TypeError, match="cannot take a new task"):
        add_task(build_cross_stitch(mlp, OLD), NEW)
