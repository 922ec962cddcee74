"""SDMGrad (Xiao, Ban & Ji, NeurIPS 2023, "Direction-oriented multi-objective learning: simple and
provable stochastic algorithms").

The update is kept near the average gradient g0: lambda minimizes 1/2 ||G^T lambda + lmbda g0||^2
over the simplex, by projected (stochastic) gradient steps warm-started from the last batch's
lambda, and the model moves along d = (G^T lambda + lmbda g0) / (1 + lmbda).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import GradientBalancer
from taskloom.balancing.moco import simplex_step


def sdmgrad_weights(gram: Tensor, weights: Tensor, lmbda: float = 0.3, gamma: float = 0.1,
                    iterations: int = 20) -> tuple[Tensor, Tensor]:
    """(simplex lambda after ``iterations`` projected steps from ``weights``, task weights of the update d).

    The Gram matrix is divided by the mean of its diagonal (the mean squared gradient norm), so
    ``gamma`` does not depend on the scale of the losses (our choice; the minimizer is unchanged).
    The gradient of the objective in lambda is Gn lambda + lmbda Gn 1 / K; d's weights are
    (lambda + lmbda / K) / (1 + lmbda).
    """
    k = gram.shape[0]
    scale = gram.diagonal().mean()
    normalized = gram / scale if float(scale) > 0 else gram
    pull = lmbda * normalized.mean(dim=1)
    lam = weights.clone()
    for _ in range(iterations):
        simplex_step(lam, None, lambda w: normalized @ w + pull, gamma)
    return lam, (lam + lmbda / k) / (1 + lmbda)


def sdmgrad(grads: Tensor, lmbda: float = 0.3, gamma: float = 0.1, iterations: int = 20,
            weights: Tensor | None = None) -> Tensor:
    """SDMGrad's update direction from the K x P gradient matrix (lambda starts at ``weights``, else uniform)."""
    k = grads.shape[0]
    start = weights if weights is not None else grads.new_full((k,), 1.0 / k)
    return sdmgrad_weights(grads @ grads.T, start, lmbda, gamma, iterations)[1] @ grads


class SDMGrad(GradientBalancer):
    """SDMGrad (Xiao et al. 2023): simplex weights pulled toward the mean gradient by ``lmbda`` >= 0.

    ``lmbda`` = 0 is MGDA by projected gradient; a large ``lmbda`` tends to the mean gradient.
    ``iterations`` projected steps of size ``gamma`` per batch, warm-started from the previous
    lambda (a buffer, saved in checkpoints): across batches this is the paper's stochastic
    projected gradient on lambda, with one batch's gradients for both samples. A task absent from
    a batch keeps its lambda; the present ones step on their own simplex. The weights depend on the
    Gramian only, so representation mode, data parallelism and ``task_chunk`` work.
    """

    weights_from_gram = True

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 lmbda: float = 0.3, gamma: float = 0.1, iterations: int = 20,
                 task_chunk: int | None = None,
                 engine: str = "auto") -> None:
        if not lmbda >= 0:
            raise ValueError(f"balancing.options.lmbda must be >= 0, got {lmbda!r}")
        if not gamma > 0:
            raise ValueError(f"balancing.options.gamma must be positive, got {gamma!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"balancing.options.iterations must be an integer >= 1, got {iterations!r}")
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
        self.lmbda, self.gamma, self.iterations = float(lmbda), float(gamma), iterations
        k = len(self.task_names)
        self.register_buffer("lambdas", torch.full((k,), 1.0 / k, dtype=torch.float64))

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        gram = (grads @ grads.T).to(torch.float64)
        if self.lambdas.device != grads.device:
            self.lambdas = self.lambdas.to(grads.device)
        rows = None if list(names) == self.task_names else self.task_index(names).to(grads.device)
        current = self.lambdas if rows is None else self.lambdas[rows]
        mass = current.sum()
        start = current / mass if float(mass) > 0 else torch.full_like(current, 1.0 / current.numel())
        lam, weights = sdmgrad_weights(gram, start, self.lmbda, self.gamma, self.iterations)
        if rows is None:
            self.lambdas.copy_(lam)
        elif float(mass) > 0:
            self.lambdas[rows] = lam * mass
        weights = weights.to(grads.dtype)
        return weights @ grads, weights
