"""MGDA (Sener & Koltun, NeurIPS 2018): the minimum-norm point in the convex hull of the task gradients.

The weights solve min_w ||sum_k w_k g_k||^2 on the simplex, found in the K x K Gram matrix
with the paper's Frank-Wolfe solver (``solver="frank_wolfe"``: started at the best pair's
closed form; away steps make it converge linearly) or, by default and much faster at many
tasks, an exact active-set solve. MGDA-UB is the same on the shared representation's gradients.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import AggregatorBalancer
from taskloom.balancing.upgrad import box_qp


def pair_min_norm(g11: Tensor, g12: Tensor, g22: Tensor) -> Tensor:
    """Weight ``gamma`` on the first vector of min ||gamma v1 + (1 - gamma) v2|| (the paper's closed form)."""
    denom = g11 + g22 - 2 * g12
    gamma = (g22 - g12) / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, gamma.clamp(0, 1), torch.where(g11 <= g22, 1.0, 0.0).to(denom.dtype))


def best_pair(gram: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The pair (i, j), i != j, whose min-norm combination is the shortest, and its weight on i.

    Every pair's closed form at once on the K x K Gram matrix: the Frank-Wolfe start of the
    authors' solver, which then only has to improve on the best two-task answer.
    """
    k = gram.shape[0]
    diag = gram.diagonal()
    gamma = pair_min_norm(diag[:, None], gram, diag[None, :])
    value = gamma**2 * diag[:, None] + 2 * gamma * (1 - gamma) * gram + (1 - gamma) ** 2 * diag[None, :]
    value = value.masked_fill(torch.eye(k, dtype=torch.bool, device=gram.device), float("inf"))
    best = torch.argmin(value.reshape(-1))
    return best // k, best % k, gamma.reshape(-1)[best]


def min_norm_weights(gram: Tensor, max_iter: int = 500, tol: float = 1e-12, check_every: int = 8) -> Tensor:
    """Simplex weights of the min-norm point of the convex hull of K vectors, from their Gram matrix.

    Frank-Wolfe (Sener & Koltun 2018, Algorithm 2) from the best pair, with away steps and
    exact line search, in float64; stops when the duality gap falls below ``tol`` times the
    largest squared norm (checked every ``check_every`` steps). On the host, one transfer.
    """
    k = gram.shape[0]
    g = gram.detach().to("cpu", torch.float64)
    if k == 1:
        return torch.ones(1, dtype=gram.dtype, device=gram.device)
    diag = g.diagonal()
    i, j, gamma = best_pair(g)
    eye = torch.eye(k, dtype=g.dtype, device=g.device)
    w = gamma * eye[i] + (1 - gamma) * eye[j]
    scale = diag.max().clamp_min(torch.finfo(g.dtype).tiny)
    for step in range(max_iter):
        grad = g @ w
        current = w @ grad
        s = torch.argmin(grad)
        v = torch.argmax(torch.where(w > 0, grad, -float("inf")))
        gap_fw = current - grad[s]
        gap_away = grad[v] - current
        toward = gap_fw >= gap_away
        direction = torch.where(toward, eye[s] - w, w - eye[v])
        w_v = w[v]
        limit = torch.where(toward, torch.ones_like(w_v), w_v / (1 - w_v).clamp_min(1e-300))
        curvature = direction @ g @ direction
        step_size = torch.where(curvature > 0, -(grad @ direction) / curvature.clamp_min(1e-300), limit)
        step_size = torch.minimum(step_size.clamp_min(0), limit)
        w = w + step_size * direction
        w = torch.where(w > 1e-15, w, torch.zeros_like(w))
        w = w / w.sum()
        if (step + 1) % check_every == 0 and bool(gap_fw <= tol * scale):
            break
    return w.to(gram.device, gram.dtype)


def min_norm_weights_active_set(gram: Tensor) -> Tensor:
    """The same weights, exactly, by an active-set solve of the equivalent problem min_{u >= 0} u'Gu/2 - sum(u).

    Its solution u* is w* / ||g_w*||^2, so w* = u* / sum(u*); this takes a few batched solves
    where Frank-Wolfe takes hundreds of steps at 40 tasks. On the host, one transfer.
    """
    k = gram.shape[0]
    if k == 1:
        return torch.ones(1, dtype=gram.dtype, device=gram.device)
    g = gram.detach().to("cpu", torch.float64)
    zeros = torch.zeros((1, k), dtype=g.dtype)
    u = box_qp(g, zeros, torch.ones_like(zeros))[0]
    w = u / u.sum().clamp_min(torch.finfo(u.dtype).tiny)
    grad = g @ w
    if bool(grad.min() < w @ grad - 1e-9 * g.diagonal().max()) or not bool(torch.isfinite(w).all()):
        return min_norm_weights(gram)  # 0 in the hull or a degenerate system: Frank-Wolfe is robust there
    return w.to(gram.device, gram.dtype)


def _solve(gram: Tensor, solver: str, options: dict) -> Tensor:
    if solver == "active_set":
        return min_norm_weights_active_set(gram)
    if solver == "frank_wolfe":
        return min_norm_weights(gram, **options)
    raise ValueError(f"mgda solver must be 'active_set' or 'frank_wolfe', got {solver!r}")


def mgda_weights(gram: Tensor, normalize: str = "none", solver: str = "active_set", **options) -> Tensor:
    """MGDA's task weights from the Gram matrix; ``normalize`` = "none" or "l2" (each gradient to unit norm first)."""
    if normalize == "none":
        return _solve(gram, solver, options)
    if normalize == "l2":
        norms = gram.diagonal().clamp_min(torch.finfo(gram.dtype).tiny).sqrt()
        return _solve(gram / (norms[:, None] * norms[None, :]), solver, options) / norms
    raise ValueError(f"mgda normalize must be 'none' or 'l2', got {normalize!r}")


def mgda(grads: Tensor, **options) -> Tensor:
    """The MGDA update direction of the K x P gradient matrix: its min-norm convex combination."""
    return mgda_weights(grads @ grads.T, **options) @ grads


class MGDA(AggregatorBalancer):
    """MGDA (Sener & Koltun 2018): the min-norm convex combination of the per-task gradients.

    Options: ``solver="active_set"`` (the default: exact, a few batched solves) or
    ``solver="frank_wolfe"`` (the paper's Frank-Wolfe solver); ``normalize="none"`` or ``"l2"``.
    """

    weights_fn = mgda_weights


class MGDAUB(MGDA):
    """MGDA-UB (Sener & Koltun 2018): MGDA on the gradients of the shared representation."""

    def __init__(self, task_names: Sequence[str], mode: str = "representation", batched: bool | None = None,
                 task_chunk: int | None = None, engine: str = "auto",
                 **options) -> None:
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine, **options)
