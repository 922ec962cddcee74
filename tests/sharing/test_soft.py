"""Soft sharing (Duong et al. 2015; Yang & Hospedales 2017): the tie's closed forms, a large tie
pulls the towers together, no tie trains each tower as its own single-task model."""
from __future__ import annotations

import copy

import pytest
import torch

from sharing._helpers import batch, mlp, tasks, total_loss
from taskloom.sharing import MultiTaskModel, build_soft, tie_penalty


def tower_distance(model) -> float:
    towers = list(model.towers.values())
    flat = [torch.cat([p.detach().reshape(-1) for p in t.parameters()]) for t in towers]
    return max(float((a - b).norm()) for i, a in enumerate(flat) for b in flat[i + 1:])


def train(model, steps: int, lr: float, task_list=None) -> None:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        optimizer.zero_grad()
        total_loss(model, batch(32, seed=step), task_list).backward()
        optimizer.step()


def test_l2_tie_is_the_sum_of_pairwise_squared_distances():
    towers = [torch.nn.Linear(3, 2) for _ in range(3)]
    expected = sum(
        sum(((p - q) ** 2).sum() for p, q in zip(a.parameters(), b.parameters()))
        for i, a in enumerate(towers) for b in towers[i + 1:]
    )
    assert torch.allclose(tie_penalty(towers, "l2"), expected)


def test_trace_tie_of_identical_towers_is_sqrt_k_times_the_norm():
    tower = torch.nn.Linear(3, 2)
    towers = [copy.deepcopy(tower) for _ in range(4)]
    expected = sum(2.0 * p.norm() for p in tower.parameters())
    assert torch.allclose(tie_penalty(towers, "trace"), expected, rtol=1e-5)


def test_trace_tie_is_the_nuclear_norm_of_the_stacked_parameters():
    towers = [torch.nn.Linear(3, 2, bias=False) for _ in range(3)]
    stacked = torch.stack([t.weight.reshape(-1) for t in towers])
    assert torch.allclose(tie_penalty(towers, "trace"), torch.linalg.matrix_norm(stacked, ord="nuc"))


def test_a_very_large_tie_drives_the_towers_together():
    torch.manual_seed(0)
    tied = build_soft(mlp, tasks(), strength=100.0)
    free = copy.deepcopy(tied)
    free.strength = 0.0
    start = tower_distance(tied)
    train(tied, 60, lr=1e-3)
    train(free, 60, lr=1e-3)
    assert tower_distance(tied) < 1e-3 * start
    assert tower_distance(free) > 0.5 * start


def test_without_tie_each_tower_trains_as_an_independent_single_task_model():
    torch.manual_seed(0)
    model = build_soft(mlp, tasks(), strength=0.0)
    assert model.regularization() is None
    singles = {
        t.name: MultiTaskModel(copy.deepcopy(model.towers[t.name]), heads={t.name: copy.deepcopy(model.heads[t.name])})
        for t in tasks()
    }
    train(model, 15, lr=0.05)
    for t in tasks():
        train(singles[t.name], 15, lr=0.05, task_list=[t])
        for p, q in zip(singles[t.name].parameters(), [*model.towers[t.name].parameters(),
                                                         *model.heads[t.name].parameters()]):
            assert torch.equal(p, q)


def test_the_tie_reaches_only_the_towers():
    model = build_soft(mlp, tasks(), strength=1.0)
    model.regularization().backward()
    assert all(p.grad is None for p in model.heads.parameters())
    assert all(p.grad is not None for p in model.towers.parameters())



def test_unknown_tie_is_refused():
    with pytest.raises(ValueError, match="tie"):
        build_soft(mlp, tasks(), tie="l1")
