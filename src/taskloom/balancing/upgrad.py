"""UPGrad (Quinton & Rey, 2024, "Jacobian descent for multi-objective optimization"): average of projections.

Each g_i is projected onto the dual cone {x : g_j . x >= 0 for all j}; the projection is
J' v_i with v_i = argmin_{v >= e_i} v' G v, and the update is the mean of the projections, so
it conflicts with no task. The K box-constrained QPs are solved together in torch by a
primal-dual active-set method (Newton on the KKT system), exact once the active set settles.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import AggregatorBalancer


def box_qp(gram: Tensor, lower: Tensor, linear: Tensor | None = None, max_iter: int | None = None,
           ridge: float = 1e-12, tol: float = 1e-9) -> Tensor:
    """Rows v_b = argmin_{v >= lower_b} v' G v / 2 - linear_b . v for each row of ``lower`` (B x K), in float64.

    Primal-dual active-set iterations, each one batched linear solve, until the active set
    repeats; rows whose result fails the KKT conditions (degenerate, e.g. more tasks than
    dimensions) are re-solved by a monotone primal active-set method (Lawson-Hanson style).
    """
    g = gram.detach().to(torch.float64)
    k = g.shape[0]
    lower = lower.to(g)
    scale = g.diagonal().mean().clamp_min(torch.finfo(g.dtype).tiny)
    a = g / scale + ridge * torch.eye(k, dtype=g.dtype, device=g.device)
    linear = torch.zeros_like(lower) if linear is None else (linear.to(g) / scale).expand_as(lower)
    eye = torch.eye(k, dtype=g.dtype, device=g.device)
    active = (lower @ a - linear) >= 0
    v = lower.clone()
    for _ in range(max_iter or 2 * k + 5):
        matrix = torch.where(active.unsqueeze(2), eye, a)
        rhs = torch.where(active, lower, linear)
        v = torch.linalg.solve(matrix, rhs.unsqueeze(2)).squeeze(2)
        multipliers = v @ a - linear
        new_active = (multipliers - (v - lower)) > 0
        if torch.equal(new_active, active):
            break
        active = new_active
    v = torch.maximum(v, lower)
    multipliers = v @ a - linear
    size = 1 + v.abs().amax(dim=1)
    slack = v - lower
    failed = (multipliers.amin(dim=1) < -tol * size) | ((multipliers * slack).abs().amax(dim=1) > tol * size**2)
    if bool(failed.any()):
        for row in failed.nonzero().flatten().tolist():
            v[row] = lower[row] + _nonnegative_qp(a, a @ lower[row] - linear[row], tol)
    return v


def _nonnegative_qp(a: Tensor, c: Tensor, tol: float, max_iter: int = 500) -> Tensor:
    """argmin_{u >= 0} u' a u / 2 + c . u by a primal active-set method (monotone, so it cannot cycle)."""
    k = a.shape[0]
    u = torch.zeros(k, dtype=a.dtype, device=a.device)
    free = torch.zeros(k, dtype=torch.bool, device=a.device)
    for _ in range(max_iter):
        grad = a @ u + c
        candidates = torch.where(free, torch.full_like(grad, float("inf")), grad)
        j = int(candidates.argmin())
        if float(candidates[j]) >= -tol * (1 + float(u.abs().max())):
            break
        free[j] = True
        while True:
            idx = free.nonzero().flatten()
            z = torch.zeros_like(u)
            z[idx] = torch.linalg.lstsq(a[idx][:, idx], -c[idx].unsqueeze(1)).solution.squeeze(1)
            if bool((z[idx] > 0).all()):
                u = z
                break
            blocking = idx[z[idx] <= 0]
            steps = u[blocking] / (u[blocking] - z[blocking]).clamp_min(torch.finfo(a.dtype).tiny)
            alpha = float(steps.min().clamp(0, 1))
            u = u + alpha * (z - u)
            free &= u > tol * (1 + float(u.abs().max()))
            u = torch.where(free, u, torch.zeros_like(u))
            if not bool(free.any()):
                break
    return u


def upgrad_weights(gram: Tensor, preferences: Sequence[float] | Tensor | None = None) -> Tensor:
    """UPGrad's weights: the preference-weighted (default: mean) sum of the K dual-cone projection weights."""
    k = gram.shape[0]
    eye = torch.eye(k, dtype=torch.float64, device=gram.device)
    v = box_qp(gram, eye)
    pref = torch.full((k,), 1.0 / k, dtype=v.dtype, device=v.device) if preferences is None else \
        torch.as_tensor(preferences, dtype=v.dtype, device=v.device)
    return (pref @ v).to(gram.dtype)


def upgrad(grads: Tensor, preferences: Sequence[float] | Tensor | None = None) -> Tensor:
    """UPGrad's update direction from the K x P gradient matrix."""
    return upgrad_weights(grads @ grads.T, preferences) @ grads


class UPGrad(AggregatorBalancer):
    """UPGrad (Quinton & Rey 2024): the mean of every task gradient projected onto the dual cone."""

    weights_fn = upgrad_weights

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None) -> None:
        super().__init__(task_names, mode=mode, batched=batched)
