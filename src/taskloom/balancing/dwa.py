"""Dynamic weight average (Liu, Johns & Davison, CVPR 2019, the MTAN paper).

A task whose loss fell slowly over the last epoch gets a larger weight in the next one,
using only the epoch-mean losses: no gradients, no per-step state.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor

from taskloom.balancing.base import LossWeighting


class DynamicWeightAverage(LossWeighting):
    """Weights ``K softmax(r / T)`` with ``r_k = L_k(t-1) / L_k(t-2)`` from epoch-mean losses.

    Every weight is 1 until two epochs of a task's losses are known (the paper's first two
    epochs). A task missing from an epoch's losses (never labelled in it) keeps its
    history; a task without two finite, positive epoch losses has the neutral ratio 1.
    """

    def __init__(self, task_names: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(task_names)
        if not temperature > 0:
            raise ValueError(f"balancing.options.temperature must be positive, got {temperature!r}")
        self.temperature = float(temperature)
        self._index = {name: i for i, name in enumerate(self.task_names)}
        count = len(self.task_names)
        self.register_buffer("previous_losses", torch.full((2, count), math.nan))
        self.register_buffer("task_weights", torch.ones(count))

    def on_epoch_end(self, epoch_losses: Mapping[str, float]) -> None:
        for name, value in epoch_losses.items():
            if name not in self._index:
                continue
            value = float(value)
            if math.isfinite(value):
                column = self._index[name]
                self.previous_losses[1, column] = self.previous_losses[0, column]
                self.previous_losses[0, column] = value
        last, before = self.previous_losses
        ratio = last / before
        ratio = torch.where(torch.isfinite(ratio) & (before > 0), ratio, torch.ones_like(ratio))
        weights = len(self.task_names) * torch.softmax(ratio / self.temperature, dim=0)
        self.task_weights.copy_(weights.to(self.task_weights.dtype))

    def weights(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        unknown = [name for name in losses if name not in self._index]
        if unknown:
            raise KeyError(f"DWA got losses for unknown tasks {unknown}; it was built for {self.task_names}")
        return {name: self.task_weights[self._index[name]] for name in losses}
