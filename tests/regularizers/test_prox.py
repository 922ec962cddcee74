"""Proximal operators and closed-form updates against their definitions (hand values, KKT, brute force)."""
import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from taskloom.regularizers.prox import (
    capped_simplex_weights, cluster_metric, group_soft_threshold, project_l1_ball, prox_l1inf, prox_squared_l1,
    prox_squared_trace, singular_value_threshold, task_covariance,
)


def test_group_soft_threshold_by_hand():
    V = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    out = group_soft_threshold(V, 1.0)
    assert torch.allclose(out, torch.tensor([[2.4, 3.2], [0.0, 0.0], [0.0, 0.0]]))


def test_group_soft_threshold_kkt():
    generator = torch.Generator().manual_seed(0)
    V = torch.randn(50, 6, generator=generator)
    tau = 2.0
    X = group_soft_threshold(V, tau)
    for v, x in zip(V, X):
        if x.norm() > 0:  # v - x = tau x / ||x||
            assert torch.allclose(v - x, tau * x / x.norm(), atol=1e-12)
        else:  # 0 in x - v + tau * ball
            assert v.norm() <= tau + 1e-12
    assert (X.norm(dim=1) == 0).any() and (X.norm(dim=1) > 0).any()


def test_project_l1_ball_by_hand():
    V = torch.tensor([[3.0, 1.0], [0.5, -0.5], [-4.0, 2.0]])
    out = project_l1_ball(V, 2.0)
    assert torch.allclose(out, torch.tensor([[2.0, 0.0], [0.5, -0.5], [-2.0, 0.0]]))
    assert torch.equal(project_l1_ball(V, 0.0), torch.zeros_like(V))


def test_project_l1_ball_variational_inequality():
    # p = P(v) iff <v - p, u - p> <= 0 for every u in the ball.
    generator = torch.Generator().manual_seed(1)
    V = 3 * torch.randn(20, 7, generator=generator)
    radius = 1.5
    P = project_l1_ball(V, radius)
    assert (P.abs().sum(dim=1) <= radius + 1e-12).all()
    U = torch.randn(200, 7, generator=generator)
    U = U / U.abs().sum(dim=1, keepdim=True) * radius * torch.rand(200, 1, generator=generator)
    for v, p in zip(V, P):
        assert ((U - p) @ (v - p)).max() <= 1e-10


def _linf_prox_by_bisection(v: np.ndarray, tau: float) -> np.ndarray:
    # prox of tau ||.||_inf is clip(v, -mu, mu) with sum max(|v| - mu, 0) = tau (or 0 when ||v||_1 <= tau).
    if np.abs(v).sum() <= tau:
        return np.zeros_like(v)
    low, high = 0.0, np.abs(v).max()
    for _ in range(200):
        mu = (low + high) / 2
        low, high = (mu, high) if np.maximum(np.abs(v) - mu, 0).sum() > tau else (low, mu)
    return np.clip(v, -high, high)


def test_prox_l1inf_matches_independent_solution_and_moreau():
    generator = torch.Generator().manual_seed(2)
    V = 2 * torch.randn(30, 5, generator=generator)
    tau = 1.7
    X = prox_l1inf(V, tau)
    for v, x in zip(V.numpy(), X.numpy()):
        assert np.allclose(x, _linf_prox_by_bisection(v, tau), atol=1e-10)
    # Moreau: prox_f(v) + prox_{f*}(v) = v, with prox_{f*} the projection onto the dual ball {||u||_1 <= tau}.
    dual = project_l1_ball(V, tau)
    assert torch.allclose(X + dual, V, atol=1e-12)
    assert (dual.abs().sum(dim=1) <= tau + 1e-12).all()
    assert torch.allclose((X * dual).sum(dim=1), tau * X.abs().amax(dim=1), atol=1e-10)  # Fenchel-Young equality


def test_singular_value_threshold_is_the_trace_norm_prox():
    generator = torch.Generator().manual_seed(3)
    V = torch.randn(8, 5, generator=generator)
    tau = 1.0
    X = singular_value_threshold(V, tau)
    U, s, Vh = np.linalg.svd(V.numpy(), full_matrices=False)
    assert np.allclose(X.numpy(), U @ np.diag(np.maximum(s - tau, 0)) @ Vh, atol=1e-12)

    def objective(x):
        return 0.5 * ((x - V) ** 2).sum() + tau * torch.linalg.matrix_norm(x, ord="nuc")

    best = objective(X)
    for _ in range(50):
        assert objective(X + 1e-3 * torch.randn(8, 5, generator=generator)) >= best


def test_prox_squared_l1_matches_bounded_quasi_newton():
    rng = np.random.default_rng(4)
    for tau in (0.05, 0.3, 2.0):
        s = np.abs(rng.normal(size=6)) * 3
        expected = minimize(lambda x: 0.5 * ((x - s) ** 2).sum() + tau * x.sum() ** 2, np.zeros(6),
                            jac=lambda x: x - s + 2 * tau * x.sum(), bounds=[(0, None)] * 6, method="L-BFGS-B",
                            options={"ftol": 1e-15, "gtol": 1e-12}).x
        assert np.allclose(prox_squared_l1(torch.tensor(s), tau).numpy(), expected, atol=1e-6)


def test_prox_squared_trace_acts_on_singular_values():
    generator = torch.Generator().manual_seed(5)
    V = torch.randn(6, 4, generator=generator)
    U, s, Vh = torch.linalg.svd(V, full_matrices=False)
    assert torch.allclose(prox_squared_trace(V, 0.2), (U * prox_squared_l1(s, 0.2)) @ Vh, atol=1e-12)


def test_task_covariance_attains_squared_trace_norm():
    generator = torch.Generator().manual_seed(6)
    W = torch.randn(10, 4, generator=generator)
    omega = task_covariance(W)
    assert torch.trace(omega).item() == pytest.approx(1.0)
    assert torch.linalg.eigvalsh(omega).min() > 0
    attained = torch.trace(W @ torch.linalg.inv(omega) @ W.T)
    nuclear = torch.linalg.matrix_norm(W, ord="nuc") ** 2
    assert attained.item() == pytest.approx(nuclear.item(), rel=1e-10)
    for _ in range(100):  # no PSD, trace-one Omega does better
        A = torch.randn(4, 4, generator=generator)
        other = A @ A.T + 1e-3 * torch.eye(4)
        other = other / torch.trace(other)
        assert torch.trace(W @ torch.linalg.inv(other) @ W.T) >= attained - 1e-9


def test_cluster_metric_is_feasible_and_optimal():
    generator = torch.Generator().manual_seed(7)
    W = torch.randn(12, 5, generator=generator)
    k, eta = 2, 0.5
    M = cluster_metric(W, k, eta)
    values = torch.linalg.eigvalsh(M)
    assert torch.trace(M).item() == pytest.approx(k, abs=1e-9)
    assert values.min() >= -1e-10 and values.max() <= 1 + 1e-10

    def value(metric):
        return torch.trace(W @ torch.linalg.inv(eta * torch.eye(5) + metric) @ W.T).item()

    sigma = np.sqrt(np.clip(np.linalg.eigvalsh((W.T @ W).numpy()), 0, None))
    constrained = minimize(lambda g: (sigma ** 2 / (eta + g)).sum(), np.full(5, k / 5), method="SLSQP",
                           bounds=[(0, 1)] * 5, constraints=[{"type": "eq", "fun": lambda g: g.sum() - k}],
                           options={"ftol": 1e-14, "maxiter": 500})
    assert value(M) == pytest.approx(constrained.fun, rel=1e-7)
    for _ in range(100):  # random feasible M: random eigenvectors, eigenvalues in [0, 1] summing to k
        Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=generator))
        g = capped_simplex_weights(torch.rand(5, generator=generator) + 0.01, k, 0.0)
        assert value((Q * g) @ Q.T) >= value(M) - 1e-9
