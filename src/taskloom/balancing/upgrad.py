"""UPGrad (Quinton & Rey, 2024, "Jacobian descent for multi-objective optimization"): average of projections.

Each g_i is projected onto the dual cone {x : g_j . x >= 0 for all j}; the projection is
J' v_i with v_i = argmin_{v >= e_i} v' G v, and the update is the mean of the projections, so
it conflicts with no task. The K box-constrained QPs are solved together in torch by a
primal-dual active-set method (Newton on the KKT system), exact once the active set settles,
on the host (the K x K problem is tiny: one transfer per step instead of a sync per iteration).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import AggregatorBalancer


def box_qp(gram: Tensor, lower: Tensor, linear: Tensor | None = None, max_iter: int | None = None,
           ridge: float = 1e-12, tol: float = 1e-9) -> Tensor:
    """Rows v_b = argmin_{v >= lower_b} v' G v / 2 - linear_b . v for each row of ``lower`` (B x K), in float64.

    Primal-dual active-set iterations, each one batched Cholesky solve of the free block,
    until the active set repeats; rows whose result fails the KKT conditions (degenerate,
    e.g. more tasks than dimensions) are re-solved by a monotone primal active-set method
    (Lawson-Hanson style). On the host: one K x K transfer in, one B x K out, per call.
    """
    device = lower.device
    g = gram.detach().to("cpu", torch.float64)
    k = g.shape[0]
    lower = lower.detach().to("cpu", torch.float64)
    scale = g.diagonal().mean().clamp_min(torch.finfo(g.dtype).tiny)
    a = g / scale
    a.diagonal().add_(ridge)
    linear = torch.zeros_like(lower) if linear is None else (linear.detach().to(g) / scale).expand_as(lower)
    eye = torch.eye(k, dtype=g.dtype)
    active = (lower @ a - linear) >= 0
    v, settled, failed_factor = lower.clone(), False, None
    for _ in range(max_iter or 2 * k + 5):
        free = ~active
        fixed = torch.where(active, lower, 0.0)
        block = torch.where(free.unsqueeze(2) & free.unsqueeze(1), a, eye)  # the free block, identity elsewhere
        rhs = torch.where(active, lower, linear - fixed @ a)
        factor, failed_factor = torch.linalg.cholesky_ex(block)
        del block  # K x K x K each: at most two alive (K = 40: 0.5 MB apiece)
        v = torch.cholesky_solve(rhs.unsqueeze(2), factor).squeeze(2)
        del factor
        multipliers = v @ a - linear
        new_active = (multipliers - (v - lower)) > 0
        if torch.equal(new_active, active):
            settled = True
            break
        active = new_active
    v = torch.maximum(v, lower)
    if settled and not bool(failed_factor.any()):  # a settled active set with exact solves is the KKT point
        return v.to(device)
    multipliers = v @ a - linear
    size = 1 + v.abs().amax(dim=1)
    slack = v - lower
    failed = (multipliers.amin(dim=1) < -tol * size) | ((multipliers * slack).abs().amax(dim=1) > tol * size**2)
    failed |= ~torch.isfinite(v).all(dim=1)
    if bool(failed.any()):
        for row in failed.nonzero().flatten().tolist():
            v[row] = lower[row] + _nonnegative_qp(a, a @ lower[row] - linear[row], tol)
    return v.to(device)


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
    v = box_qp(gram, torch.eye(k, dtype=torch.float64))
    pref = torch.full((k,), 1.0 / k, dtype=v.dtype) if preferences is None else \
        torch.as_tensor(preferences, dtype=v.dtype, device="cpu")
    return (pref @ v).to(gram.device, gram.dtype)


def upgrad(grads: Tensor, preferences: Sequence[float] | Tensor | None = None) -> Tensor:
    """UPGrad's update direction from the K x P gradient matrix."""
    return upgrad_weights(grads @ grads.T, preferences) @ grads


class UPGrad(AggregatorBalancer):
    """UPGrad (Quinton & Rey 2024): the mean of every task gradient projected onto the dual cone."""

    weights_fn = upgrad_weights

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 task_chunk: int | None = None, engine: str = "auto") -> None:
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
