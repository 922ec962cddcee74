"""Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution, weights with G alpha = 1 / alpha.

alpha > 0 minimizes 1/2 alpha' G alpha - sum log alpha (G the Gram matrix), whose optimum is
exactly the bargaining condition. It is solved for beta = D^1/2 alpha on the unit-diagonal
G_hat = D^-1/2 G D^-1/2 (D = diag G, plus a relative ridge), the same condition G_hat beta =
1 / beta, so tasks whose gradient norms differ by orders of magnitude are solved alike. The
problem is self-concordant: Newton steps in torch (no convex-solver package) on the host,
one K x K transfer per step, warm-started from the last step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import GradientBalancer


@dataclass
class NashMTLState:
    """The last solution beta = D^1/2 alpha of the rescaled problem (the warm start of the next step)."""

    beta: Tensor | None = None


def nash_weights(gram: Tensor, state: NashMTLState | None = None, max_iter: int = 50, tol: float = 1e-10,
                 ridge: float = 1e-12) -> Tensor:
    """Weights alpha > 0 with G alpha = 1 / alpha, by damped Newton on the rescaled potential (float64, host).

    Newton steps of length 1 / (1 + lambda) (lambda the Newton decrement) while lambda > 1/4,
    full steps after, until lambda^2 < ``tol``^2; then |alpha * G alpha - 1| is within ``ridge``
    (times beta^2) of zero. The Hessian is positive definite: a Cholesky solve, no error check.
    """
    k = gram.shape[0]
    g = gram.detach().to("cpu", torch.float64)
    norms = g.diagonal().clamp_min(0).sqrt()
    largest = float(norms.max())
    if not largest > 0:
        return torch.ones(k, dtype=gram.dtype, device=gram.device)
    norms = norms.clamp_min(largest * 1e-12)  # a task without gradient gets a finite (irrelevant) weight
    a = g / (norms[:, None] * norms[None, :])
    a.diagonal().add_(ridge)
    warm = state.beta if state is not None else None
    if warm is not None and warm.shape == (k,) and bool((warm > 0).all() & torch.isfinite(warm).all()):
        beta = warm.to(a)
    else:  # the best multiple of the ones vector
        beta = torch.full((k,), (k / max(float(a.sum()), 1e-12)) ** 0.5, dtype=a.dtype)
    for _ in range(max_iter):
        inverse = beta.reciprocal()
        hessian = a + torch.diag(inverse * inverse)
        residual = a @ beta - inverse
        delta = torch.cholesky_solve(residual.unsqueeze(1), torch.linalg.cholesky_ex(hessian).L).squeeze(1)
        squared_decrement = float(residual @ delta)
        beta = beta - (delta if squared_decrement < 1 / 16 else delta / (1 + max(squared_decrement, 0.0) ** 0.5))
        if squared_decrement < tol * tol:
            break
    if state is not None:
        state.beta = beta
    return (beta / norms).to(gram.device, gram.dtype)


def nashmtl(grads: Tensor, state: NashMTLState | None = None, **options) -> Tensor:
    """Nash-MTL's update direction from the K x P gradient matrix."""
    return nash_weights(grads @ grads.T, state, **options) @ grads


class NashMTL(GradientBalancer):
    """Nash-MTL (Navon et al. 2022): bargaining weights, warm-started between steps."""

    weights_from_gram = True

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 max_iter: int = 50, tol: float = 1e-10, task_chunk: int | None = None, engine: str = "auto") -> None:
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
        self.max_iter, self.tol = max_iter, tol
        self.state = NashMTLState()

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        if self.state.beta is not None and self.state.beta.shape != (len(names),):
            self.state = NashMTLState()
        weights = nash_weights(grads @ grads.T, self.state, max_iter=self.max_iter, tol=self.tol)
        return weights @ grads, weights
