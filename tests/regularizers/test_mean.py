"""Mean-regularized MTL (Evgeniou & Pontil 2004) against the closed form through the task graph's Laplacian."""
import numpy as np
import pytest
import torch

from taskloom.linear import MultiTaskLinear
from taskloom.regularizers import MeanRegularized

try:
    from . import _linear_models as lm
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import _linear_models as lm

TASKS = ["a", "b", "c", "d"]


def closed_form(X, Y, alpha):
    """Solve (I_T kron Xc'Xc/n + (2 alpha / T) L kron I_d) vec W = vec(Xc'Yc/n), L = T I - 11' (complete graph)."""
    n, d = X.shape
    T = Y.shape[1]
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    laplacian = T * np.eye(T) - np.ones((T, T))
    system = np.kron(np.eye(T), Xc.T @ Xc / n) + np.kron(2 * alpha / T * laplacian, np.eye(d))
    W = np.linalg.solve(system, (Xc.T @ Yc / n).reshape(-1, order="F")).reshape(d, T, order="F")
    return W, Y.mean(0) - X.mean(0) @ W


@pytest.mark.parametrize("alpha", [0.01, 0.3])
def test_estimator_matches_laplacian_closed_form(alpha):
    X, Y, _ = lm.regression_problem(n=80, d=6, T=4, informative=6, seed=3, noise=0.5)
    W, b = closed_form(X, Y, alpha)
    model = MultiTaskLinear("mean", alpha=alpha, tol=1e-12, max_iter=20_000).fit(X, Y)
    assert np.allclose(model.coef_.T, W, atol=1e-9) and np.allclose(model.intercept_, b, atol=1e-9)


def test_zero_penalty_is_independent_least_squares_and_large_is_pooled():
    X, Y, _ = lm.regression_problem(n=80, d=6, T=4, informative=6, seed=4)
    design = np.hstack([X, np.ones((80, 1))])
    independent = np.linalg.lstsq(design, Y, rcond=None)[0]
    free = MultiTaskLinear("mean", alpha=0.0, tol=1e-12, max_iter=20_000).fit(X, Y)
    assert np.allclose(free.coef_.T, independent[:-1], atol=1e-9)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    pooled = np.linalg.solve(Xc.T @ Xc, Xc.T @ Yc.mean(axis=1))
    tied = MultiTaskLinear("mean", alpha=1e8, tol=1e-13, max_iter=20_000).fit(X, Y)
    assert np.allclose(tied.coef_, np.tile(pooled, (4, 1)), atol=1e-6)
    assert np.allclose(closed_form(X, Y, 1e8)[0], pooled[:, None], atol=1e-6)


def test_regularizer_penalty_is_laplacian_quadratic_and_training_reaches_closed_form():
    X, Y, _ = lm.regression_problem(n=80, d=6, T=4, informative=6, seed=5, noise=0.5)
    alpha = 0.3
    model = lm.linear_model(6, TASKS)
    regularizer = MeanRegularized(model, parameters="heads.{task}.weight", strength=alpha)
    W = regularizer.task_matrix()
    laplacian = 4 * torch.eye(4) - torch.ones(4, 4)
    assert regularizer.penalty().item() == pytest.approx((alpha / 4 * torch.trace(W @ laplacian @ W.T)).item())
    lm.proximal_gradient(model, regularizer, torch.tensor(X), torch.tensor(Y), steps=1500, extra_curvature=2 * alpha)
    expected, _ = closed_form(X, Y, alpha)
    assert np.allclose(regularizer.task_matrix().detach().numpy(), expected, atol=1e-8)
    assert set(regularizer.report()["distance_to_mean"]) == set(TASKS)
