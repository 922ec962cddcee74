"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018): one learned log-variance per task.

Each task's loss is scaled by a learned precision and a log-variance term stops the
precision from growing without bound, so noisier tasks get smaller weights.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from taskloom.balancing.base import LossWeighting


class UncertaintyWeighting(LossWeighting):
    """Minimizes ``sum_k exp(-s_k) L_k + s_k`` jointly in the model and ``s_k = log sigma_k^2``.

    This is twice Kendall et al.'s regression form ``L / (2 sigma^2) + log sigma``, so it has
    the same optimum for fixed losses, ``s_k = log L_k`` (weight ``1 / L_k``). The ``s_k`` are
    parameters of the balancer that the trainer's optimizer updates. A task absent from a
    batch adds no term, so its ``s_k`` gets no gradient from that step.
    """

    def __init__(self, task_names: Sequence[str], init_log_variance: float = 0.0) -> None:
        super().__init__(task_names)
        self._index = {name: i for i, name in enumerate(self.task_names)}
        self.log_variance = nn.Parameter(torch.full((len(self.task_names),), float(init_log_variance)))

    def _present(self, losses: Mapping[str, Tensor]) -> tuple[list[str], Tensor]:
        unknown = [name for name in losses if name not in self._index]
        if unknown:
            raise KeyError(
                f"uncertainty weighting got losses for unknown tasks {unknown}; it was built for {self.task_names}"
            )
        names = [name for name in self.task_names if name in losses]
        if len(names) == len(self.task_names):
            return names, self.log_variance
        return names, self.log_variance[[self._index[name] for name in names]]

    def weights(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        names, log_variance = self._present(losses)
        return dict(zip(names, torch.exp(-log_variance).unbind()))

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        names, log_variance = self._present(losses)
        stacked = torch.stack([losses[name] for name in names])
        precision = torch.exp(-log_variance)
        self._last_weights = dict(zip(names, precision.detach().unbind()))
        return (precision * stacked + log_variance).sum()
