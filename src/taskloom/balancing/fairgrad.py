"""FairGrad (Ban & Ji, ICML 2024, "Fair resource allocation in multi-task learning"): alpha-fair weights.

The update d = G_w = J' w gives task i the improvement u_i = g_i . d = (G w)_i; FairGrad picks the
d that maximizes the alpha-fair utility sum_i u_i^(1 - alpha) / (1 - alpha) (log u_i at alpha = 1),
whose optimality condition is G w = w^(-1/alpha) elementwise (alpha = 1 is Nash-MTL's G w = 1 / w).
w > 0 minimizes the strictly convex potential w' G w / 2 - sum_i h(w_i) with h' = w^(-1/alpha):
damped Newton in float64 on the host, on the Gramian scaled to unit mean diagonal (the solution of
s G is s^(-alpha / (1 + alpha)) times that of G), so it is a function of the K x K Gramian alone.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import AggregatorBalancer


def _potential(a: Tensor, w: Tensor, alpha: float) -> Tensor:
    """w' A w / 2 - sum h(w) with h(w) = log w (alpha = 1) or w^(1 - 1/alpha) / (1 - 1/alpha)."""
    if alpha == 1.0:
        concave = torch.log(w).sum()
    else:
        power = 1.0 - 1.0 / alpha
        concave = (w.pow(power) / power).sum()
    return 0.5 * (w @ a @ w) - concave


def fairgrad_weights(gram: Tensor, alpha: float = 1.0, max_iter: int = 100, tol: float = 1e-12,
                     ridge: float = 1e-12) -> Tensor:
    """Weights w > 0 with (G w)_i = w_i^(-1/alpha) for every task i (float64 on the host, one transfer).

    Newton steps on the potential with backtracking far from the optimum (they keep w > 0 and the
    potential falling), full steps near it, until the residual G w - w^(-1/alpha) is below ``tol``
    relative to w^(-1/alpha). ``ridge`` (a floor on squared norms relative to their mean) keeps a
    task without gradient finite (its weight then multiplies a zero row). A Gramian of zeros gives
    weights of one. Where no solution exists (zero in the convex hull of the gradients: tasks in
    total conflict) the weights grow without bound and the last of ``max_iter`` iterates is
    returned; for exactly opposite gradients its update is zero.
    """
    if not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"fairgrad alpha must be a finite number > 0, got {alpha!r}")
    k = gram.shape[0]
    g = gram.detach().to("cpu", torch.float64)
    scale = float(g.diagonal().mean())
    if not scale > 0:
        return torch.ones(k, dtype=gram.dtype, device=gram.device)
    a = g / scale
    a.diagonal().clamp_min_(ridge)
    inv_alpha = 1.0 / alpha
    total = float(a.sum())
    start = (k / total if total > ridge * k else k / float(a.diagonal().sum())) ** (alpha / (1 + alpha))
    w = torch.full((k,), start, dtype=torch.float64)
    value = _potential(a, w, alpha)
    for _ in range(max_iter):
        target = w.pow(-inv_alpha)
        residual = a @ w - target
        if float(residual.abs().max()) <= tol * float(target.abs().max()):
            break
        hessian = a + torch.diag(inv_alpha * w.pow(-inv_alpha - 1))
        factor, failed = torch.linalg.cholesky_ex(hessian)
        step = torch.cholesky_solve(residual.unsqueeze(1), factor).squeeze(1) if not bool(failed) else \
            torch.linalg.lstsq(hessian, residual.unsqueeze(1)).solution.squeeze(1)
        length = 1.0
        ratio = step / w  # a step of length t keeps w > 0 while t * ratio < 1
        if bool((ratio > 0).any()):
            length = min(1.0, 0.99 / float(ratio.max()))
        decrement = float(residual @ step)  # the squared Newton decrement
        while True:
            candidate = w - length * step
            candidate_value = _potential(a, candidate, alpha)
            if decrement < 1e-2 or length < 1e-12 or bool(candidate_value <= value - 1e-4 * length * decrement):
                break  # near the optimum full steps converge quadratically (values no longer resolve the descent)
            length *= 0.5
        if not bool((candidate > 0).all()) or not bool(torch.isfinite(candidate).all()):
            break
        w, value = candidate, candidate_value
    return (w * scale ** (-alpha / (1 + alpha))).to(gram.device, gram.dtype)


def fairgrad(grads: Tensor, alpha: float = 1.0, **options) -> Tensor:
    """FairGrad's update direction from the K x P gradient matrix."""
    return fairgrad_weights(grads @ grads.T, alpha, **options) @ grads


class FairGrad(AggregatorBalancer):
    """FairGrad (Ban & Ji 2024): the alpha-fair update, weights solving G w = w^(-1/alpha).

    ``alpha`` (default 1.0, where it coincides with Nash bargaining) trades total improvement
    (alpha -> 0) for the worst task's (alpha -> infinity, max-min fairness).
    """

    weights_fn = fairgrad_weights

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 alpha: float = 1.0, task_chunk: int | None = None,
                 engine: str = "auto") -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
            raise ValueError(f"balancing.options.alpha of fairgrad must be a finite number > 0, got {alpha!r}")
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine,
                         alpha=float(alpha))
