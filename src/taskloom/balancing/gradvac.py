"""Gradient Vaccine (Wang et al., ICLR 2021): raise each pair's gradient similarity to an adaptive target.

For each task i and each other task j (random order), when cos(g_i', g_j) is below the
target phi_ij, g_i' gains the multiple of g_j that sets the cosine exactly to phi_ij; the
targets are exponential moving averages (rate ``beta``) of the observed cosines. Runs on
the Gram matrix; the update is the sum of the adjusted gradients.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from taskloom.balancing.base import SeededGenerator
from taskloom.balancing.gradient import GradientBalancer
from taskloom.balancing.pcgrad import projection_orders


@dataclass
class GradVacState:
    """The K x K EMA targets of the pairwise cosines (zeros at the start, as in the paper)."""

    targets: Tensor | None = None
    generator: torch.Generator | None = field(default=None, repr=False)


def gradvac_coefficients(gram: Tensor, targets: Tensor, orders: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """(C, new targets): adjusted g_i' = sum_m C[i, m] g_m, by the paper's rule applied in ``orders``.

    The adjusted gradient's squared norm and its inner products with the gradients still to
    visit are tracked incrementally (each step adds a multiple of one g_j), so a step is a
    handful of K-vector operations on the Gram matrix.
    """
    k = gram.shape[0]
    g = gram.detach().to(torch.float64)
    coef = torch.eye(k, dtype=g.dtype, device=g.device)
    phi_hat = targets.detach().to(g).clone()
    if k == 1:
        return coef, phi_hat
    rows = torch.arange(k, device=g.device).unsqueeze(1)
    tiny = torch.finfo(g.dtype).tiny
    square = g.diagonal().clone()  # ||g_i'||^2
    wanted = phi_hat[rows, orders]
    root_wanted = (1 - wanted**2).clamp_min(0).sqrt()
    squares_j = g.diagonal()[orders]
    norms_j = squares_j.clamp_min(0).sqrt()
    inverse_scales = (norms_j * root_wanted).clamp_min(tiny).reciprocal()
    inner = g[rows, orders]  # inner[i, t] = g_i' . g_j(t)
    cross = g[orders.unsqueeze(2), orders.unsqueeze(1)].unbind(dim=1)  # cross[s][i, t] = g_j(s) . g_j(t)
    ones = torch.ones(k, dtype=g.dtype, device=g.device)
    columns = zip(wanted.unbind(1), root_wanted.unbind(1), squares_j.unbind(1), norms_j.unbind(1),
                  inverse_scales.unbind(1), cross)
    gains, cosines = [], []
    for t, (target, root_target, square_j, norm_j, inverse_scale, cross_t) in enumerate(columns):
        now = inner[:, t]
        norm_i = square.clamp_min(0).sqrt()
        denom = norm_i * norm_j
        phi = now / denom.clamp_min(tiny)
        sine = torch.addcmul(ones, phi, phi, value=-1).clamp_min(0).sqrt()
        # gain = ||g_i'|| (target sin - phi sqrt(1 - target^2)) / (||g_j|| sqrt(1 - target^2))
        gain = torch.addcmul(target * sine, phi, root_target, value=-1).mul_(norm_i).mul_(inverse_scale)
        gain = torch.where((phi < target) & (denom > 0), gain, 0.0)
        inner = torch.addcmul(inner, gain.unsqueeze(1), cross_t)
        square = torch.addcmul(square, gain, torch.addcmul(now, gain, square_j, value=0.5), value=2)
        gains.append(gain)
        cosines.append(phi)
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
    """Gradient Vaccine (Wang et al. 2021): adaptive pairwise cosine targets with EMA rate ``beta``.

    The targets are a buffer and the random orders come from its own generator on the
    gradients' device (seeded by ``seed``, state saved), so a resumed run repeats.
    """

    weights_from_gram = True

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 beta: float = 0.01, seed: int = 0, shuffle: bool = True, task_chunk: int | None = None,
                 engine: str = "auto") -> None:
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
        if not 0 <= beta <= 1:
            raise ValueError(f"balancing.options.beta must be in [0, 1], got {beta!r}")
        self.beta = beta
        self.shuffle = shuffle
        self.random = SeededGenerator(seed)
        k = len(self.task_names)
        self.register_buffer("targets", torch.zeros((k, k), dtype=torch.float64))

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        if self.targets.device != grads.device:
            self.targets = self.targets.to(grads.device)
        generator = self.random.on(grads.device) if self.shuffle else None
        if list(names) == self.task_names:
            state = GradVacState(self.targets, generator)
            weights = gradvac_weights(grads @ grads.T, state, self.beta, self.shuffle)
            self.targets.copy_(state.targets)
            return weights @ grads, weights
        index = self.task_index(names).to(grads.device)
        state = GradVacState(self.targets[index][:, index], generator)
        weights = gradvac_weights(grads @ grads.T, state, self.beta, self.shuffle)
        self.targets[index.unsqueeze(1), index.unsqueeze(0)] = state.targets
        return weights @ grads, weights

    def get_extra_state(self) -> Any:
        return self.random.state()

    def set_extra_state(self, state: Any) -> None:
        self.random.load(state)
