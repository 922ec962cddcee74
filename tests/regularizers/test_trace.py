"""Trace norm: singular value thresholding with X = I, and a closing duality gap with the spectral-norm dual."""
import numpy as np
import pytest

from taskloom.linear import MultiTaskLinear
from taskloom.regularizers import TraceNorm

try:
    from . import _linear_models as lm
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import _linear_models as lm


def svt(Y, tau):
    U, s, Vh = np.linalg.svd(Y, full_matrices=False)
    return U @ np.diag(np.maximum(s - tau, 0)) @ Vh


def test_identity_design_gives_singular_value_thresholding_exactly():
    rng = np.random.default_rng(6)
    n, T, alpha = 8, 5, 0.2
    Y = rng.normal(size=(n, T))
    # (1/(2n)) ||Y - W||^2 + alpha ||W||_* is minimized by SVT(Y, n alpha)
    model = MultiTaskLinear("trace", alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=100).fit(np.eye(n), Y)
    expected = svt(Y, n * alpha)
    assert np.linalg.matrix_rank(expected) < T
    assert np.allclose(model.coef_.T, expected, atol=1e-12)


def test_duality_gap_with_spectral_dual_closes():
    X, Y, _ = lm.regression_problem(n=60, d=8, T=5, informative=8, seed=7)
    alpha = 2.0
    model = MultiTaskLinear("trace", alpha=alpha, tol=1e-12, max_iter=50_000).fit(X, Y)
    W = model.coef_.T
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    R = Yc - Xc @ W
    primal = (R ** 2).sum() / 120 + alpha * np.linalg.svd(W, compute_uv=False).sum()
    theta = R / 60
    theta *= min(1.0, alpha / np.linalg.norm(Xc.T @ theta, ord=2))  # dual feasible: ||Xc' theta||_2 <= alpha
    dual = (theta * Yc).sum() - 30 * (theta ** 2).sum()
    assert 0 <= primal - dual < 1e-10 * (Yc ** 2).sum() / 120
    assert model.objective_ == pytest.approx(primal, rel=1e-12)
    assert 0 < np.linalg.matrix_rank(W, tol=1e-8) < 5


def test_regularizer_proximal_step_is_svt_of_stacked_heads():
    model = lm.linear_model(7, ["a", "b", "c", "d"], seed=8)
    regularizer = TraceNorm(model, strength=0.5)
    before = regularizer.task_matrix().detach().numpy().copy()
    regularizer.proximal_step(0.6)
    assert np.allclose(regularizer.task_matrix().detach().numpy(), svt(before, 0.3), atol=1e-12)
    report = regularizer.report()
    assert report["rank"] == np.linalg.matrix_rank(svt(before, 0.3), tol=1e-9)
    assert regularizer.penalty() is None
