"""Lookahead task affinity (Fifty et al. 2021): its definition, exact restoration, and grouping."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from taskloom import Batch, BatchLoader, MultiTaskDataset, MultiTaskModel, Task, task_losses
from taskloom.evaluate.affinity import AffinityTracker, lookahead_affinity
from taskloom.evaluate.grouping import select_groups


def _shared_signal_problem(n: int = 512, seed: int = 0) -> tuple[MultiTaskDataset, list[Task]]:
    """Tasks a and b predict the same function of x[:, :4]; task c an unrelated function of x[:, 4:]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.tensor([1.0, -2.0, 1.5, 0.5])
    u = torch.tensor([2.0, 1.0, -1.0, -1.5])
    signal = x[:, :4] @ w
    targets = {
        "a": signal + 0.1 * torch.randn(n, generator=g),
        "b": signal + 0.1 * torch.randn(n, generator=g),
        "c": x[:, 4:] @ u + 0.1 * torch.randn(n, generator=g),
    }
    return MultiTaskDataset(x, targets), [Task(name, "regression") for name in "abc"]


def _model(tasks, hidden: int = 16, dropout: float = 0.0, norm: bool = False) -> MultiTaskModel:
    torch.manual_seed(0)
    layers = [nn.Linear(8, hidden)] + ([nn.BatchNorm1d(hidden)] if norm else []) + [nn.ReLU(), nn.Dropout(dropout)]
    trunk = nn.Sequential(*layers)
    trunk.out_features = hidden
    return MultiTaskModel(trunk, tasks=tasks)


def test_affinity_matches_its_definition():
    data, tasks = _shared_signal_problem(64)
    model = _model(tasks)
    batch = data.batch(torch.arange(64))
    task_map = {t.name: t for t in tasks}
    lr = 0.05
    z = lookahead_affinity(model, batch, tasks, lr)
    before = task_losses(model(batch.inputs), batch, task_map)
    grad_a = torch.autograd.grad(before["a"], model.shared_parameters())
    reference = _model(tasks)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p, g in zip(reference.shared_parameters(), grad_a):
            p -= lr * g
    after = task_losses(reference(batch.inputs), batch, task_map)
    for j in "abc":
        assert z["a"][j] == pytest.approx(1 - after[j].item() / before[j].item(), rel=1e-5, abs=1e-7)
    assert z["a"]["a"] > 0


def test_lookahead_restores_model_optimizer_and_rng_exactly():
    data, tasks = _shared_signal_problem(64)
    model = _model(tasks, dropout=0.2, norm=True)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = data.batch(torch.arange(64))
    losses = task_losses(model(batch.inputs), batch, {t.name: t for t in tasks})
    sum(losses.values()).backward()
    optimizer.step()
    grads = [p.grad.clone() for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()}
                 for k, s in optimizer.state_dict()["state"].items()}
    rng = torch.get_rng_state()

    z = lookahead_affinity(model, batch, tasks, lr=0.5)

    assert set(z) == {"a", "b", "c"}
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)
    for k, s in optimizer.state_dict()["state"].items():
        for n, v in s.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt_state[k][n]))
    assert model.training


def test_same_dropout_masks_make_affinity_deterministic():
    data, tasks = _shared_signal_problem(64)
    model = _model(tasks, dropout=0.3)
    batch = data.batch(torch.arange(64))
    assert lookahead_affinity(model, batch, tasks, 0.05) == lookahead_affinity(model, batch, tasks, 0.05)


def test_rejects_a_non_positive_learning_rate():
    data, tasks = _shared_signal_problem(16)
    with pytest.raises(ValueError, match="lr must be positive"):
        lookahead_affinity(_model(tasks), data.batch(torch.arange(16)), tasks, 0.0)


def test_tasks_without_labels_in_a_batch_are_left_out():
    data, tasks = _shared_signal_problem(16)
    batch = data.batch(torch.arange(16))
    batch = Batch(batch.inputs, batch.targets, {"c": torch.zeros(16, dtype=torch.bool)})
    tracker = AffinityTracker(["a", "b", "c"])
    z = tracker.measure(_model(tasks), batch, tasks, 0.05)
    assert set(z) == {"a", "b"}
    assert tracker.on_epoch_end()["c"]["a"] is None


def test_affinity_groups_the_tasks_that_share_a_signal():
    data, tasks = _shared_signal_problem()
    model = _model(tasks)
    task_map = {t.name: t for t in tasks}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
    tracker = AffinityTracker(["a", "b", "c"])
    for epoch in range(2):
        loader = BatchLoader(data, 64, seed=0)
        loader.set_epoch(epoch)
        for batch in loader:
            tracker.measure(model, batch, task_map, optimizer.param_groups[0]["lr"])
            optimizer.zero_grad()
            sum(task_losses(model(batch.inputs), batch, task_map).values()).backward()
            optimizer.step()
    z = tracker.on_epoch_end()
    assert min(z["a"]["b"], z["b"]["a"]) > max(z["a"]["c"], z["c"]["a"], z["b"]["c"], z["c"]["b"])
    assert tracker.matrix().shape == (3, 3)
    grouping = select_groups(z, networks=2)
    assert grouping.served_by["a"] == grouping.served_by["b"]
    assert {"a", "b"} <= set(grouping.groups[grouping.served_by["a"]])
    assert "c" not in grouping.groups[grouping.served_by["a"]]
