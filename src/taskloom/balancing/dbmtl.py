"""DB-MTL (Lin et al., 2023, "Dual-balancing for multi-task learning"): balance loss scales and gradient norms.

Loss scale: each task contributes the gradient of log(loss). Gradient magnitude: an EMA
g_hat_k <- beta_t g_hat_k + (1 - beta_t) g_k with beta_t = beta / t^sigma, and the update is
sum_k (max_j ||g_hat_j|| / ||g_hat_k||) g_hat_k, so every task moves with the largest norm.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import GradientBalancer


@dataclass
class DBMTLState:
    """The K x P moving averages of the log-loss gradients and the step count."""

    buffer: Tensor | None = None
    step: int = 0


def dbmtl(grads: Tensor, state: DBMTLState | None = None, beta: float = 0.9, sigma: float = 0.5) -> Tensor:
    """DB-MTL's update from the K x P gradients of the log losses; ``state`` is updated in place."""
    state = state if state is not None else DBMTLState()
    state.step += 1
    rate = beta / state.step**sigma
    previous = state.buffer if state.buffer is not None else torch.zeros_like(grads)
    buffer = rate * previous + (1 - rate) * grads
    state.buffer = buffer
    norms = buffer.norm(dim=1)
    scale = norms.max() / norms.clamp_min(torch.finfo(norms.dtype).tiny)
    scale = torch.where(norms > 0, scale, torch.zeros_like(scale))
    return scale @ buffer


class DBMTL(GradientBalancer):
    """DB-MTL (Lin et al. 2023): log-loss gradients, EMA-smoothed and rescaled to the largest norm."""

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 beta: float = 0.9, sigma: float = 0.5, eps: float = 1e-8) -> None:
        super().__init__(task_names, mode=mode, batched=batched)
        self.beta, self.sigma, self.eps = beta, sigma, eps
        self._buffer: Tensor | None = None
        self._steps: Tensor | None = None

    def transform_losses(self, losses: list[Tensor]) -> list[Tensor]:
        return [torch.log(loss + self.eps) for loss in losses]

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        k = len(self.task_names)
        if self._buffer is None or self._buffer.shape[1] != grads.shape[1]:
            self._buffer = grads.new_zeros((k, grads.shape[1]))
            self._steps = torch.zeros(k, dtype=torch.long)
        index = self.task_index(names)
        self._steps[index] += 1
        rate = (self.beta / self._steps[index].to(torch.float64) ** self.sigma).to(grads)
        if len(names) == k and names == self.task_names:
            buffer = self._buffer.lerp_(grads, (1 - rate).unsqueeze(1))
        else:
            rows = index.to(grads.device)
            buffer = self._buffer[rows].lerp_(grads, (1 - rate).unsqueeze(1))
            self._buffer[rows] = buffer
        norms = buffer.norm(dim=1)
        scale = torch.where(norms > 0, norms.max() / norms.clamp_min(torch.finfo(norms.dtype).tiny),
                            torch.zeros_like(norms))
        return scale @ buffer, scale
