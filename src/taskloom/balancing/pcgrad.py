"""PCGrad (Yu et al., NeurIPS 2020): project away the conflicting part of every task gradient, then sum.

Each g_i is projected, in random order, onto the normal plane of every g_j it conflicts
with (negative inner product). The projections are linear in the original gradients, so
they run on the K x K Gram matrix and the update is one weighted sum of the K rows.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from taskloom.balancing.base import SeededGenerator
from taskloom.balancing.gradient import GradientBalancer


def projection_orders(k: int, generator: torch.Generator | None = None, shuffle: bool = True,
                      device: torch.device | str = "cpu") -> Tensor:
    """A K x (K-1) matrix on ``device``: row i is the order in which task i visits the others (random or ascending).

    Drawn on ``device`` (on the generator's, then moved, when a generator lives elsewhere).
    """
    device = torch.device(device)
    if shuffle:
        source = device if generator is None else generator.device
        keys = torch.rand((k, k), generator=generator, device=source).to(device)
    else:
        keys = torch.arange(k, dtype=torch.float32, device=device).expand(k, k).clone()
    keys.fill_diagonal_(float("inf"))
    return keys.argsort(dim=1)[:, : k - 1]


def pcgrad_coefficients(gram: Tensor, orders: Tensor) -> Tensor:
    """C (K x K) with projected g_i' = sum_m C[i, m] g_m, by PCGrad's rule applied in ``orders``.

    Row i's inner products with the gradients it will visit, g_i' . g_j(t), are one K x (K-1)
    matrix updated after each projection, so a step is a few K-vector operations.
    """
    k = gram.shape[0]
    g = gram.detach().to(torch.float64)
    if k == 1:
        return torch.ones((1, 1), dtype=g.dtype, device=g.device)
    rows = torch.arange(k, device=g.device).unsqueeze(1)
    inner = g[rows, orders]  # inner[i, t] = g_i' . g_j(t), for the current g_i'
    cross = g[orders.unsqueeze(2), orders.unsqueeze(1)].unbind(dim=1)  # cross[s][i, t] = g_j(s) . g_j(t)
    squares = g.diagonal()[orders].clamp_min(torch.finfo(g.dtype).tiny).unbind(dim=1)
    steps = []
    for t in range(k - 1):
        step = inner[:, t].clamp_max(0) / squares[t]  # g_i' -= step * g_j(t) where they conflict
        inner = torch.addcmul(inner, step.unsqueeze(1), cross[t], value=-1)
        steps.append(step)
    coef = torch.eye(k, dtype=g.dtype, device=g.device)
    return coef.scatter_add_(1, orders, -torch.stack(steps, dim=1))


def pcgrad_weights(gram: Tensor, generator: torch.Generator | None = None, shuffle: bool = True) -> Tensor:
    """Task weights w with PCGrad's update = w @ grads (the column sums of the projection coefficients)."""
    orders = projection_orders(gram.shape[0], generator, shuffle, gram.device)
    return pcgrad_coefficients(gram, orders).sum(dim=0).to(gram.dtype)


def pcgrad(grads: Tensor, generator: torch.Generator | None = None, shuffle: bool = True) -> Tensor:
    """PCGrad's update direction from the K x P gradient matrix."""
    return pcgrad_weights(grads @ grads.T, generator, shuffle) @ grads


class PCGrad(GradientBalancer):
    """PCGrad (Yu et al. 2020): gradient surgery that removes pairwise conflicts before summing.

    The random orders come from its own generator on the gradients' device (seeded by
    ``seed``); its state is saved with the balancer, so a resumed run repeats them.
    """

    weights_from_gram = True

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 seed: int = 0, shuffle: bool = True, task_chunk: int | None = None, engine: str = "auto") -> None:
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
        self.shuffle = shuffle
        self.random = SeededGenerator(seed)

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        generator = self.random.on(grads.device) if self.shuffle else None
        weights = pcgrad_weights(grads @ grads.T, generator, self.shuffle)
        return weights @ grads, weights

    def get_extra_state(self) -> Any:
        return self.random.state()

    def set_extra_state(self, state: Any) -> None:
        self.random.load(state)
