"""Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution, weights with G alpha = 1 / alpha.

alpha > 0 minimizes 1/2 alpha' G alpha - sum log alpha (G the Gram matrix), whose optimum is
exactly the bargaining condition; the problem is self-concordant, so damped Newton in torch
converges in a few steps (no convex-solver package), warm-started from the last step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import GradientBalancer


@dataclass
class NashMTLState:
    """The last solution, in the scale of the normalized Gram matrix (the warm start)."""

    alpha: Tensor | None = None


def nash_weights(gram: Tensor, state: NashMTLState | None = None, max_iter: int = 50, tol: float = 1e-10,
                 ridge: float = 1e-9, check_every: int = 4) -> Tensor:
    """Weights alpha > 0 with G alpha = 1 / alpha (to ``tol``), by damped Newton on the convex potential."""
    k = gram.shape[0]
    g = gram.detach().to(torch.float64)
    scale = g.diagonal().mean().clamp_min(torch.finfo(torch.float64).tiny)
    a = g / scale + ridge * torch.eye(k, dtype=g.dtype, device=g.device)
    if state is not None and state.alpha is not None and state.alpha.shape == (k,):
        alpha = state.alpha.to(a)
    else:
        alpha = torch.ones(k, dtype=a.dtype, device=a.device) / (a.sum(dim=1).clamp_min(1e-3).sqrt())
    for step in range(max_iter):
        residual = a @ alpha - 1 / alpha
        hessian = a + torch.diag(1 / alpha**2)
        delta = torch.linalg.solve(hessian, -residual)
        decrement = (-(residual @ delta)).clamp_min(0).sqrt()
        alpha = alpha + delta / torch.where(decrement > 0.25, 1 + decrement, torch.ones_like(decrement))
        alpha = alpha.clamp_min(1e-12)
        if (step + 1) % check_every == 0 and bool((residual * alpha).abs().max() < tol):
            break
    if state is not None:
        state.alpha = alpha
    return (alpha / scale.sqrt()).to(gram.dtype)


def nashmtl(grads: Tensor, state: NashMTLState | None = None, **options) -> Tensor:
    """Nash-MTL's update direction from the K x P gradient matrix."""
    return nash_weights(grads @ grads.T, state, **options) @ grads


class NashMTL(GradientBalancer):
    """Nash-MTL (Navon et al. 2022): bargaining weights, warm-started between steps."""

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 max_iter: int = 50, tol: float = 1e-10) -> None:
        super().__init__(task_names, mode=mode, batched=batched)
        self.max_iter, self.tol = max_iter, tol
        self.state = NashMTLState()

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        weights = nash_weights(grads @ grads.T, self.state, max_iter=self.max_iter, tol=self.tol)
        return weights @ grads, weights
