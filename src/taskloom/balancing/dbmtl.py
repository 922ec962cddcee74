"""DB-MTL (Lin et al., 2023, "Dual-balancing for multi-task learning"): balance loss scales and gradient norms.

Loss scale: each task contributes the gradient of log(loss). Gradient magnitude: an EMA
g_hat_k <- beta_t g_hat_k + (1 - beta_t) g_k with beta_t = beta / t^sigma, and the update is
sum_k (max_j ||g_hat_j|| / ||g_hat_k||) g_hat_k, so every task moves with the largest norm.
Defined on parameter gradients (representation mode is refused).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import MODES, GradientBalancer


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
    """DB-MTL (Lin et al. 2023): log-loss gradients, EMA-smoothed and rescaled to the largest norm.

    Parameter gradients only: a moving average of per-sample representation gradients would
    mix different samples across batches (as LibMTL, it refuses ``mode="representation"``).
    The averages and per-task step counts are buffers, so checkpoints save and resume them.
    """

    modes = ("parameters",)
    lazy_buffers = ("_buffer",)

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 beta: float = 0.9, sigma: float = 0.5, eps: float = 1e-8, task_chunk: int | None = None,
                 engine: str = "auto") -> None:
        if mode not in self.modes and mode in MODES:
            raise ValueError(
                "dbmtl averages parameter gradients across steps and cannot use representation gradients "
                "(they are per sample, of a different batch each step): set balancing.options.mode to "
                "'parameters' (the default) or pick a method that allows it, such as mgda_ub"
            )
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
        self.beta, self.sigma, self.eps = beta, sigma, eps
        k = len(self.task_names)
        self.register_buffer("_buffer", torch.zeros((k, 0)))  # K x P, sized at the first step
        self.register_buffer("_steps", torch.zeros(k, dtype=torch.long))

    def check_task_chunk(self) -> None:
        """DB-MTL refuses ``task_chunk``: its state is a moving average of every task's whole gradient."""
        raise ValueError(
            "dbmtl cannot use balancing.options.task_chunk: it keeps a moving average of every task's gradient "
            "of the shared parameters (a K x P state, by definition of the method), so chunking the per-task "
            "gradients would not bound its memory; remove task_chunk or pick a Gramian-based method such as upgrad")

    def transform_losses(self, losses: list[Tensor]) -> list[Tensor]:
        return [torch.log(loss + self.eps) for loss in losses]

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        k, size = len(self.task_names), grads.shape[1]
        if self._buffer.shape[1] != size:
            if self._buffer.numel():
                raise ValueError(f"dbmtl's averages have {self._buffer.shape[1]} entries per task but the "
                                 f"gradients {size}: the shared parameters changed; build a new balancer")
            self._buffer = grads.new_zeros((k, size))
        if self._buffer.device != grads.device or self._buffer.dtype != grads.dtype:
            self._buffer = self._buffer.to(grads)
        if self._steps.device != grads.device:
            self._steps = self._steps.to(grads.device)
        if list(names) == self.task_names:
            self._steps += 1
            rate = self.beta * self._steps.to(torch.float64).pow(-self.sigma)
            buffer = self._buffer.lerp_(grads, (1 - rate).to(grads.dtype).unsqueeze(1))
        else:
            rows = self.task_index(names).to(grads.device)
            self._steps[rows] += 1
            rate = self.beta * self._steps[rows].to(torch.float64).pow(-self.sigma)
            buffer = self._buffer[rows].lerp_(grads, (1 - rate).to(grads.dtype).unsqueeze(1))
            self._buffer[rows] = buffer
        norms = buffer.norm(dim=1)
        scale = torch.where(norms > 0, norms.max() / norms.clamp_min(torch.finfo(norms.dtype).tiny),
                            torch.zeros_like(norms))
        return scale @ buffer, scale
