"""Gradient Vaccine (Wang et al., ICLR 2021): raise each pair's gradient similarity to an adaptive target.

For each task i and each other task j (random order), when cos(g_i', g_j) is below the
target phi_ij, g_i' gains the multiple of g_j that sets the cosine exactly to phi_ij; the
targets are exponential moving averages (rate ``beta``) of the observed cosines. Runs on
the Gram matrix; the update is the sum of the adjusted gradients.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import GradientBalancer
from taskloom.balancing.pcgrad import projection_orders


@dataclass
class GradVacState:
    """The K x K EMA targets of the pairwise cosines (zeros at the start, as in the paper)."""

    targets: Tensor | None = None
    generator: torch.Generator | None = field(default=None, repr=False)


def gradvac_coefficients(gram: Tensor, targets: Tensor, orders: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """(C, new targets): adjusted g_i' = sum_m C[i, m] g_m, by the paper's rule applied in ``orders``.

    Inner products and squared norms of the adjusted gradients are tracked incrementally
    (each step adds a multiple of one g_j), so a step is a handful of K-vector operations.
    """
    k = gram.shape[0]
    g = gram.detach().to(torch.float64)
    rows = torch.arange(k, device=g.device).unsqueeze(1)
    tiny = torch.finfo(g.dtype).tiny
    norms = g.diagonal().clamp_min(0).sqrt()
    wanted = targets.detach().to(torch.float64)[rows, orders]
    root_wanted = (1 - wanted**2).clamp_min(0).sqrt()
    norm_j = norms[orders]
    scale_j = (norm_j * root_wanted).clamp_min(tiny)
    inner_all = g.clone()
    square = g.diagonal().clone()
    gains, cosines = [], []
    for t in range(k - 1):
        j = orders[:, t]
        inner = inner_all.gather(1, j.unsqueeze(1)).squeeze(1)
        norm_i = square.clamp_min(0).sqrt()
        denom = norm_i * norm_j[:, t]
        phi = inner / denom.clamp_min(tiny)
        target = wanted[:, t]
        gain = norm_i * (target * (1 - phi**2).clamp_min(0).sqrt() - phi * root_wanted[:, t]) / scale_j[:, t]
        gain = torch.where((phi < target) & (denom > 0), gain, torch.zeros_like(gain))
        inner_all = inner_all + gain.unsqueeze(1) * g[j]
        square = square + gain * (2 * inner + gain * norms[j] ** 2)
        gains.append(gain)
        cosines.append(phi)
    coef = torch.eye(k, dtype=g.dtype, device=g.device)
    phi_hat = targets.detach().to(torch.float64).clone()
    if k > 1:
        coef[rows, orders] = torch.stack(gains, dim=1)
        phi_hat[rows, orders] = (1 - beta) * wanted + beta * torch.stack(cosines, dim=1)
    return coef, phi_hat


def gradvac_weights(gram: Tensor, state: GradVacState | None = None, beta: float = 0.01,
                    shuffle: bool = True) -> Tensor:
    """Task weights with GradVac's update = w @ grads; ``state`` (targets, RNG) is updated in place."""
    k = gram.shape[0]
    state = state if state is not None else GradVacState()
    if state.targets is None:
        state.targets = torch.zeros((k, k), dtype=torch.float64, device=gram.device)
    orders = projection_orders(k, state.generator, shuffle, gram.device)
    coef, state.targets = gradvac_coefficients(gram, state.targets, orders, beta)
    return coef.sum(dim=0).to(gram.dtype)


def gradvac(grads: Tensor, state: GradVacState | None = None, beta: float = 0.01, shuffle: bool = True) -> Tensor:
    """GradVac's update direction from the K x P gradient matrix (``state`` carries the targets between steps)."""
    return gradvac_weights(grads @ grads.T, state, beta, shuffle) @ grads


class GradVac(GradientBalancer):
    """Gradient Vaccine (Wang et al. 2021): adaptive pairwise cosine targets with EMA rate ``beta``."""

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 beta: float = 0.01, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(task_names, mode=mode, batched=batched)
        if not 0 <= beta <= 1:
            raise ValueError(f"balancing.beta must be in [0, 1], got {beta!r}")
        self.beta = beta
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        k = len(self.task_names)
        self.register_buffer("targets", torch.zeros((k, k), dtype=torch.float64))

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        index = self.task_index(names).to(self.targets.device)
        sub = self.targets[index][:, index]
        state = GradVacState(sub, self.generator)
        weights = gradvac_weights(grads @ grads.T, state, self.beta, self.shuffle)
        self.targets[index.unsqueeze(1), index.unsqueeze(0)] = state.targets.to(self.targets.device)
        return weights @ grads, weights
