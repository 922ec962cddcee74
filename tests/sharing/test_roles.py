"""Properties every architecture shares: parameter roles match which losses reach which
parameters, roles cover every trainable parameter, and one summed-loss step moves them all."""
from __future__ import annotations

import pytest
import torch

from sharing._helpers import batch, losses, mlp, tasks, total_loss
from taskloom.sharing import ARCHITECTURES, count_parameters

CASES = [
    ("hard", {}),
    ("soft", {"strength": 0.1}),
    ("soft", {"tie": "trace", "strength": 0.1}),
    ("hybrid", {"strength": 0.1}),
    ("cross_stitch", {}),
    ("mmoe", {"num_experts": 3}),
    ("ple", {}),
    ("ple", {"num_levels": 2, "shared_experts": 2, "task_experts": 2}),
    ("ple", {"num_levels": 3, "cuts": [2, 3]}),
    ("low_level", {"depths": {"sign": 3}}),
    ("cascade", {"depths": {"sign": 3}, "successive": 0.1}),
    ("cascade", {"order": ["quadrant", "level", "sign"], "embedding_dim": 4}),
    ("interaction", {}),
    ("interaction", {"order": ["level", "quadrant", "sign"], "embedding_dim": None}),
    ("interaction", {"mode": "features"}),
    ("adversarial", {"adversarial": ["sign"], "strength": 0.5}),
    ("adversarial", {"adversarial": ["level"], "base": "mmoe", "num_experts": 2}),
    ("learn_to_branch", {}),
    ("learn_to_branch", {"branches": [2, 3], "temperature": 1.0}),
    ("mtan", {}),
    ("mtan", {"depths": [5]}),
    ("dselect_k", {}),
    ("dselect_k", {"num_experts": 2, "k": 1, "gate": "input"}),
    ("dselect_k", {"entropy": 0.1}),
    ("adversarial", {"adversarial": ["level"], "base": "dselect_k"}),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def build(name, options, task_list=None):
    torch.manual_seed(0)
    return ARCHITECTURES.get(name)(mlp, task_list or tasks(), **options)


def test_every_architecture_is_registered():
    expected = {"hard", "soft", "hybrid", "cross_stitch", "mmoe", "ple", "low_level", "cascade", "interaction",
                "adversarial", "mtan", "dselect_k"}
    assert expected <= set(ARCHITECTURES)


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_roles_cover_all_trainable_parameters_and_task_roles_are_disjoint(name, options):
    model = build(name, options)
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(n)} for n in model.task_names]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert shared.union(*per_task) == trainable
    for i, a in enumerate(per_task):
        assert not a & shared
        for b in per_task[i + 1:]:
            assert not a & b


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_roles_match_which_losses_reach_which_parameters(name, options):
    model = build(name, options)
    parameters = [p for p in model.parameters() if p.requires_grad]
    task_losses = losses(model, batch())
    reached: dict[int, set[str]] = {id(p): set() for p in parameters}
    for task, loss in task_losses.items():
        grads = torch.autograd.grad(loss, parameters, allow_unused=True, retain_graph=True)
        for p, g in zip(parameters, grads):
            if g is not None and bool(g.abs().sum() > 0):
                reached[id(p)].add(task)
    assert all(reached.values()), "a parameter no task's loss reaches"
    assert {id(p) for p in model.shared_parameters()} == {i for i, r in reached.items() if len(r) > 1}
    for task in model.task_names:
        assert {id(p) for p in model.task_parameters(task)} == {i for i, r in reached.items() if r == {task}}


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_one_summed_loss_step_changes_every_trainable_parameter(name, options):
    model = build(name, options)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    total_loss(model, batch()).backward()
    optimizer.step()
    for (pname, p), old in zip(model.named_parameters(), before):
        assert not torch.equal(p, old), f"{name}: {pname} did not change"


@pytest.mark.parametrize("name,options", [c for c in CASES if c[0] != "adversarial"], ids=[
    i for i, c in zip(IDS, CASES) if c[0] != "adversarial"])
def test_single_task_models_build_and_predict(name, options):
    options = {k: v for k, v in options.items() if k not in ("depths", "order")}
    model = build(name, options, tasks()[1:2])
    out = model(batch().inputs)
    assert list(out) == ["quadrant"] and out["quadrant"].shape == (64, 4)
    assert model.shared_parameters() == [] or name == "hard"  # hard keeps its trunk in the shared role
    assert count_parameters(model) == sum(p.numel() for p in model.task_parameters("quadrant")) + sum(
        p.numel() for p in model.shared_parameters())


def test_count_parameters_counts_each_tensor_once_and_trainable_ones_by_default():
    model = build("hard", {})
    expected = (8 * 16 + 16) + (16 * 12 + 12) + (12 + 1) + (12 * 4 + 4) + (12 + 1)
    assert count_parameters(model) == expected
    model.trunk.requires_grad_(False)
    assert count_parameters(model) == (12 + 1) + (12 * 4 + 4) + (12 + 1)
    assert count_parameters(model, trainable_only=False) == expected


def test_has_representation_only_where_there_is_one():
    assert build("hard", {}).has_representation
    assert build("hybrid", {}).has_representation
    assert not build("soft", {}).has_representation
    assert not build("mmoe", {}).has_representation
