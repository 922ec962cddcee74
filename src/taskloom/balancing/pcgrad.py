"""PCGrad (Yu et al., NeurIPS 2020): project away the conflicting part of every task gradient, then sum.

Each g_i is projected, in random order, onto the normal plane of every g_j it conflicts
with (negative inner product). The projections are linear in the original gradients, so
they run on the K x K Gram matrix and the update is one weighted sum of the K rows.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import GradientBalancer


def projection_orders(k: int, generator: torch.Generator | None = None, shuffle: bool = True,
                      device: torch.device | str = "cpu") -> Tensor:
    """A K x (K-1) matrix: row i is the order in which task i visits the other tasks (random or ascending)."""
    if shuffle:
        keys = torch.rand((k, k), generator=generator)
    else:
        keys = torch.arange(k, dtype=torch.float32).expand(k, k).clone()
    keys.fill_diagonal_(float("inf"))
    return keys.argsort(dim=1)[:, : k - 1].to(device)


def pcgrad_coefficients(gram: Tensor, orders: Tensor) -> Tensor:
    """C (K x K) with projected g_i' = sum_m C[i, m] g_m, by PCGrad's rule applied in ``orders``."""
    k = gram.shape[0]
    g = gram.detach().to(torch.float64)
    coef = torch.eye(k, dtype=g.dtype, device=g.device)
    rows = torch.arange(k, device=g.device)
    sq = g.diagonal()
    for t in range(k - 1):
        j = orders[:, t]
        inner = (coef * g[:, j].T).sum(dim=1)
        factor = torch.where(inner < 0, inner / sq[j].clamp_min(torch.finfo(g.dtype).tiny), torch.zeros_like(inner))
        coef = coef.index_put((rows, j), -factor, accumulate=True)
    return coef


def pcgrad_weights(gram: Tensor, generator: torch.Generator | None = None, shuffle: bool = True) -> Tensor:
    """Task weights w with PCGrad's update = w @ grads (the column sums of the projection coefficients)."""
    orders = projection_orders(gram.shape[0], generator, shuffle, gram.device)
    return pcgrad_coefficients(gram, orders).sum(dim=0).to(gram.dtype)


def pcgrad(grads: Tensor, generator: torch.Generator | None = None, shuffle: bool = True) -> Tensor:
    """PCGrad's update direction from the K x P gradient matrix."""
    return pcgrad_weights(grads @ grads.T, generator, shuffle) @ grads


class PCGrad(GradientBalancer):
    """PCGrad (Yu et al. 2020): gradient surgery that removes pairwise conflicts before summing."""

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(task_names, mode=mode, batched=batched)
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        weights = pcgrad_weights(grads @ grads.T, self.generator, self.shuffle)
        return weights @ grads, weights
