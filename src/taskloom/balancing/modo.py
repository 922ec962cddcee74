"""MoDo (Chen, Fan, Chen & Ying, NeurIPS 2023, "Three-way trade-off in multi-objective learning:
optimization, generalization and conflict-avoidance").

Multi-objective gradient with double sampling: the MGDA objective's gradient G G^T lambda is
estimated without bias by two independent samples, lambda <- Pi_simplex(lambda - gamma G1 G2^T lambda),
and the model moves along a third sample, d = G3^T lambda.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.moco import GradientMemory, simplex_step


def modo_step(first: Tensor, second: Tensor, update: Tensor, weights: Tensor,
              gamma: float = 0.1, rho: float = 0.0) -> tuple[Tensor, Tensor]:
    """One MoDo step from three K x P samples: (new simplex weights, direction update^T lambda)."""
    weights = simplex_step(weights.clone(), None, lambda w: first @ (w @ second) + rho * w, gamma)
    return weights, weights @ update


class MoDo(GradientMemory):
    """MoDo (Chen et al. 2023) in a one-batch-per-step trainer: the two samples are consecutive batches.

    The trainer gives one batch per step, so G1 is each task's gradient from the previous batch
    it was labelled in (kept in a buffer) and G2 = G3 is the current batch's:
    lambda <- Pi_simplex(lambda - gamma (G_prev G_cur^T lambda + rho lambda)), d = G_cur^T lambda.
    The two batches are independent draws, though taken one step apart (at parameters one small step
    apart): our reading for a single-batch loop, documented as such. A task seen for the first time
    uses its current gradient in both places. ``rho`` >= 0 is an L2 term on lambda (0 in the paper).
    Missing labels and the sub-simplex step as in MoCo; parameter gradients only.
    """

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 gamma: float = 0.1, rho: float = 0.0, task_chunk: int | None = None,
                 engine: str = "auto") -> None:
        if not gamma > 0:
            raise ValueError(f"balancing.options.gamma must be positive, got {gamma!r}")
        if not rho >= 0:
            raise ValueError(f"balancing.options.rho must be >= 0, got {rho!r}")
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
        self.gamma, self.rho = float(gamma), float(rho)

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        rows = self._prepare(grads, names)
        previous = self.memory if rows is None else self.memory[rows]
        seen = (self.seen if rows is None else self.seen[rows]).unsqueeze(1)
        first = torch.where(seen, previous, grads)
        weights = simplex_step(self.weights, rows, lambda w: first @ (w @ grads) + self.rho * w, self.gamma)
        if rows is None:
            self.memory.copy_(grads)
            self.seen.fill_(True)
        else:
            self.memory[rows] = grads
            self.seen[rows] = True
        return weights @ grads, weights
