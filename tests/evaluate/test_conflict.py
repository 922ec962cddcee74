"""Gradient cosine similarity on hand-made gradients, and per-task gradients of a real model."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from taskloom import MultiTaskModel, Task
from taskloom.evaluate.conflict import ConflictTracker, PairwiseMean, cosine_matrix, gradient_conflict, task_gradients


def test_cosine_matrix_of_hand_made_gradients():
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    cos = cosine_matrix(g)
    r = 1 / math.sqrt(2)
    expected = torch.tensor([
        [1.0, 0.0, -1.0, r],
        [0.0, 1.0, 0.0, r],
        [-1.0, 0.0, 1.0, -r],
        [r, r, -r, 1.0],
    ])
    assert torch.allclose(cos, expected, atol=1e-6)


def test_zero_gradient_has_no_direction():
    cos = cosine_matrix(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    assert cos.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_cosine_matrix_rejects_a_vector():
    with pytest.raises(ValueError, match="K x P"):
        cosine_matrix(torch.ones(3))


def _linear_model() -> MultiTaskModel:
    torch.manual_seed(0)
    trunk = nn.Linear(3, 2)
    trunk.out_features = 2
    return MultiTaskModel(trunk, tasks=[Task("a", "regression"), Task("b", "regression")])


def test_task_gradients_match_the_closed_form_and_leave_grad_untouched():
    model = _linear_model()
    x = torch.randn(5, 3)
    out = model(x)
    # loss_t = sum of head_t(trunk(x)): d/dW = head_t.weight^T x_sum, d/db = head_t.weight^T * N
    losses = {name: out[name].sum() for name in ("a", "b")}
    grads = task_gradients(model, losses)
    for name in ("a", "b"):
        w = model.heads[name].weight.detach()[0]
        expected = torch.cat([torch.outer(w, x.sum(0)).reshape(-1), w * len(x)])
        assert torch.allclose(grads[name], expected, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_gradient_conflict_is_keyed_by_task():
    model = _linear_model()
    out = model(torch.randn(5, 3))
    matrix = gradient_conflict(model, {"a": out["a"].sum(), "b": -out["a"].sum()})
    assert matrix["a"]["a"] == pytest.approx(1.0)
    assert matrix["a"]["b"] == pytest.approx(-1.0)


def test_pairwise_mean_skips_missing_cells_and_resets_each_epoch():
    tracker = PairwiseMean(["a", "b"])
    tracker.add({"a": {"a": 1.0, "b": 0.5}, "b": {"a": 0.5, "b": 1.0}})
    tracker.add({"a": {"a": 1.0, "b": float("nan")}, "b": {"a": -0.5, "b": 1.0}})
    mean = tracker.on_epoch_end()
    assert mean["a"]["b"] == 0.5 and mean["b"]["a"] == 0.0
    assert tracker.mean()["a"]["a"] is None
    with pytest.raises(ValueError, match="unknown task 'c'"):
        tracker.add({"c": {"a": 1.0}})


def test_conflict_tracker_measures_and_accumulates():
    model = _linear_model()
    tracker = ConflictTracker(["a", "b"])
    out = model(torch.randn(5, 3))
    tracker.measure(model, {"a": out["a"].sum(), "b": out["a"].sum()})
    assert tracker.on_epoch_end()["a"]["b"] == pytest.approx(1.0)
