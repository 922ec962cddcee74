"""Convex clustered MTL (Zhou, Chen & Ye 2011): the closed-form M and the alternating fixed point."""
import numpy as np
import pytest
import torch

from taskloom.linear import MultiTaskLinear
from taskloom.regularizers import ClusteredMTL
from taskloom.regularizers.prox import cluster_metric

try:
    from . import _linear_models as lm
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import _linear_models as lm

TASKS = ["a", "b", "c", "d"]


def test_regularizer_penalty_and_metric_update():
    model = lm.linear_model(5, TASKS, seed=13)
    regularizer = ClusteredMTL(model, strength=0.4, n_clusters=2, eta=0.5)
    W = regularizer.task_matrix().detach()
    M = torch.eye(4) / 2
    expected = 0.4 * 0.5 * 1.5 * torch.trace(W @ torch.linalg.inv(0.5 * torch.eye(4) + M) @ W.T)
    assert regularizer.penalty().item() == pytest.approx(expected.item(), rel=1e-12)
    regularizer.proximal_step(0.1)
    assert torch.allclose(regularizer.metric, cluster_metric(W, 2, 0.5))
    assert regularizer.value() <= expected.item() + 1e-12
    with pytest.raises(ValueError, match="n_clusters"):
        ClusteredMTL(model, n_clusters=5)


def test_estimator_reaches_the_alternating_fixed_point():
    rng = np.random.default_rng(14)
    X = rng.normal(size=(120, 6))
    centres = rng.normal(size=(6, 2))
    W_true = np.repeat(centres, 3, axis=1) + 0.1 * rng.normal(size=(6, 6))  # two clusters of three tasks
    Y = X @ W_true + 0.3 * rng.normal(size=(120, 6))
    alpha, eta = 0.05, 0.2
    model = MultiTaskLinear("cluster", alpha=alpha, n_clusters=2, eta=eta, tol=1e-12, max_iter=20_000,
                            max_outer_iter=500).fit(X, Y)
    W, M = model.coef_.T, model.cluster_metric_
    assert np.allclose(M, cluster_metric(torch.tensor(W), 2, eta).numpy(), atol=1e-6)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    gradient = Xc.T @ (Xc @ W - Yc) / 120 + 2 * alpha * eta * (1 + eta) * W @ np.linalg.inv(eta * np.eye(6) + M)
    assert np.abs(gradient).max() < 1e-6
    assert np.linalg.eigvalsh(M)[-2:].sum() == pytest.approx(2.0, abs=0.2)  # two dominant directions: two clusters
