"""Geometric loss strategy (Chennupati et al., CVPR Workshops 2019, MultiNet++).

The objective is the geometric mean of the task losses, which is invariant to each
task's loss scale: multiplying one loss by a constant multiplies the objective only.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from taskloom.balancing.base import LossWeighting


class GeometricLossStrategy(LossWeighting):
    """Minimizes ``(prod_k L_k)^(1/K)`` over the K tasks present in the batch.

    The effective weight of task k is ``GLS / (K L_k)``: tasks with small losses weigh
    more. Losses must be positive; a loss below ``eps`` counts as ``eps``. A task absent
    from a batch is left out of the product (K counts the present tasks).
    """

    def __init__(self, task_names: Sequence[str], eps: float = 1e-12) -> None:
        super().__init__(task_names)
        self.eps = float(eps)

    def _objective(self, losses: Mapping[str, Tensor]) -> tuple[list[str], Tensor, Tensor]:
        unknown = [name for name in losses if name not in self.task_names]
        if unknown:
            raise KeyError(f"GLS got losses for unknown tasks {unknown}; it was built for {self.task_names}")
        names = [name for name in self.task_names if name in losses]
        stacked = torch.stack([losses[name] for name in names]).clamp_min(self.eps)
        return names, stacked, torch.exp(torch.log(stacked).mean())

    def weights(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        names, stacked, objective = self._objective(losses)
        effective = (objective / (len(names) * stacked)).detach()
        return dict(zip(names, effective.unbind()))

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        names, stacked, objective = self._objective(losses)
        effective = (objective / (len(names) * stacked)).detach()
        self._last_weights = dict(zip(names, effective.unbind()))
        return objective
