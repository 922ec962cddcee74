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


def test_the_final_covariance_reaches_the_run_directory(tmp_path):
    from taskloom.config import parse_config
    from taskloom.regularizers.prox import task_covariance
    from taskloom.train.checkpoint import load_checkpoint
    from taskloom.train.runner import run_training

    torch.set_default_dtype(torch.float32)  # the run's data are float32 (the fixture restores float64)
    config = parse_config({
        "name": "trl", "data": {"dataset": "synthetic", "options": {"n": 120, "d": 5, "num_tasks": 3}},
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [6]}}},
        "regularizers": [{"name": "trl", "options": {"strength": 0.05, "eps": 1e-4}}],
        "train": {"epochs": 2, "batch_size": 32}, "output_dir": str(tmp_path),
    })
    summary = run_training(config, tmp_path / "run")
    model = tmp_path / "run" / "hard+equal" / "seed0"
    written = json.loads((model / "regularizers.json").read_text())
    assert summary["run_dir"] == str(tmp_path / "run") and [r["name"] for r in written] == ["TaskRelationship"]
    report = written[0]
    assert report["tasks"] == ["y1", "y2", "y3"]
    last = load_checkpoint(model / "checkpoints" / "last.pt")["model"]
    W = torch.stack([last[f"heads.{t}.weight"].reshape(-1) for t in report["tasks"]], dim=1).double()
    expected = task_covariance(W, eps=1e-4)  # Omega after the last step, in closed form at the final weights
    assert np.allclose(report["omega"], expected.numpy(), atol=1e-6)
    assert np.trace(report["omega"]) == pytest.approx(1.0, abs=1e-6)
    assert summary["cells"]["hard+equal/seed0"]["regularizers"] == written  # and compare.json carries it
    assert json.loads((model / "results.json").read_text())["regularizers"] == written
