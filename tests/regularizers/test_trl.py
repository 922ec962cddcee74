"""Task-relationship learning (Zhang & Yeung 2010): the closed-form Omega and the joint optimum."""
import json

import numpy as np
import pytest
import torch

from taskloom.linear import MultiTaskLinear
from taskloom.regularizers import TaskRelationship

try:
    from . import _linear_models as lm
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import _linear_models as lm

TASKS = ["a", "b", "c"]


def test_update_attains_squared_trace_norm_and_is_reported_by_task():
    model = lm.linear_model(5, TASKS, seed=9)
    regularizer = TaskRelationship(model, strength=0.7, eps=0.0)
    assert torch.allclose(regularizer.omega, torch.eye(3) / 3)
    regularizer.proximal_step(0.1)
    W = regularizer.task_matrix().detach()
    nuclear = torch.linalg.matrix_norm(W, ord="nuc") ** 2
    assert regularizer.penalty().item() == pytest.approx(0.7 * nuclear.item(), rel=1e-10)
    covariance = json.loads(json.dumps(regularizer.report()))
    assert covariance["tasks"] == TASKS and len(covariance["omega"]) == 3
    assert np.trace(covariance["omega"]) == pytest.approx(1.0)
    assert np.allclose(np.diag(covariance["correlation"]), 1.0)


def test_penalty_gradient_and_state_round_trip():
    model = lm.linear_model(5, TASKS, seed=10)
    regularizer = TaskRelationship(model, strength=0.5, update_every=2)
    regularizer.proximal_step(0.1)
    assert torch.allclose(regularizer.omega, torch.eye(3) / 3)  # updated every second step only
    regularizer.proximal_step(0.1)
    W = regularizer.task_matrix()
    regularizer.penalty().backward()
    gradient = torch.stack([model.heads[t].weight.grad[0] for t in TASKS], dim=1)
    assert torch.allclose(gradient, 2 * 0.5 * W.detach() @ torch.linalg.inv(regularizer.omega), atol=1e-10)
    other = TaskRelationship(lm.linear_model(5, TASKS, seed=11), strength=0.5, update_every=2)
    other.load_state_dict(regularizer.state_dict())
    assert torch.equal(other.omega, regularizer.omega) and other.steps == 2


def test_estimator_is_jointly_optimal_in_weights_and_covariance():
    X, Y, _ = lm.regression_problem(n=100, d=6, T=3, informative=6, seed=12)
    alpha = 0.02
    model = MultiTaskLinear("trl", alpha=alpha, tol=1e-13, max_iter=50_000).fit(X, Y)
    W, omega = model.coef_.T, model.task_covariance_
    # Omega is the closed form at W, and W is stationary for loss + alpha tr(W Omega^-1 W^T) at that Omega.
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    gradient = Xc.T @ (Xc @ W - Yc) / 100 + 2 * alpha * W @ np.linalg.inv(omega)
    assert np.abs(gradient).max() < 1e-7
    assert np.trace(omega) == pytest.approx(1.0)
    assert model.objective_ == pytest.approx(
        ((Yc - Xc @ W) ** 2).sum() / 200 + alpha * np.trace(W @ np.linalg.inv(omega) @ W.T), rel=1e-9)
