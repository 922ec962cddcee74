"""STCH (Lin et al., ICML 2024, "Smooth Tchebycheff scalarization for multi-objective optimization").

The objective is mu log sum_i exp(lambda_i (L_i - z_i) / mu), a smooth upper bound of the
Tchebycheff max_i lambda_i (L_i - z_i) within mu log K of it; its gradient is sum_i w_i grad L_i
with w_i = lambda_i softmax(lambda (L - z) / mu)_i, so the task furthest above its ideal point
z_i gets the most weight (all of it as mu -> 0). A loss-level method: no per-task gradients.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor

from taskloom.balancing.base import LossWeighting

IDEALS = ("min", "zero")


def stch_weights(losses: Tensor, ideal: Tensor, preferences: Tensor, mu: float) -> Tensor:
    """d STCH / d L_i: lambda_i softmax(lambda (L - z) / mu)_i, for K losses, ideal points and preferences."""
    return preferences * torch.softmax(preferences * (losses - ideal) / mu, dim=0)


def stch_value(losses: Tensor, ideal: Tensor, preferences: Tensor, mu: float) -> Tensor:
    """The smooth Tchebycheff scalarization mu log sum_i exp(lambda_i (L_i - z_i) / mu)."""
    return mu * torch.logsumexp(preferences * (losses - ideal) / mu, dim=0)


class STCH(LossWeighting):
    """STCH (Lin et al. 2024): the gradient of the smooth Tchebycheff scalarization of the task losses.

    ``mu`` (> 0, default 1.0) is the smoothing; ``preferences`` a positive weight per task
    (default 1 each, so the weights sum to 1); ``ideal`` the point z: ``"min"`` (default), the
    smallest loss seen so far for each task (so L - z >= 0 and a task at its best gets little
    weight), or ``"zero"``. The running minima are a buffer, saved in checkpoints. Tasks absent
    from a batch are left out of the softmax and keep their minimum.
    """

    def __init__(self, task_names: Sequence[str], mu: float = 1.0, preferences: Mapping[str, float] | None = None,
                 ideal: str = "min") -> None:
        super().__init__(task_names)
        if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not 0 < mu < math.inf:
            raise ValueError(f"balancing.options.mu of stch must be a finite number > 0, got {mu!r}")
        if ideal not in IDEALS:
            raise ValueError(f"balancing.options.ideal of stch must be one of {list(IDEALS)}, got {ideal!r}")
        preferences = {name: 1.0 for name in task_names} if preferences is None else dict(preferences)
        unknown = sorted(set(preferences) - set(task_names))
        missing = [name for name in task_names if name not in preferences]
        if unknown or missing:
            raise ValueError(f"balancing.options.preferences of stch must give one positive number per task "
                             f"{list(task_names)}; unknown: {unknown}, missing: {missing}")
        for name, value in preferences.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"balancing.options.preferences.{name} must be a finite number > 0, got {value!r}")
        self.mu, self.ideal = float(mu), ideal
        self._index = {name: i for i, name in enumerate(self.task_names)}
        self.register_buffer("preferences", torch.tensor([float(preferences[n]) for n in self.task_names]))
        self.register_buffer("minimum_losses", torch.full((len(self.task_names),), math.inf))

    def weights(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each present task's weight lambda_i softmax(lambda (L - z) / mu)_i (updating the running minima first)."""
        unknown = [name for name in losses if name not in self._index]
        if unknown:
            raise KeyError(f"STCH got losses for unknown tasks {unknown}; it was built for {self.task_names}")
        names = [name for name in self.task_names if name in losses]
        index = torch.tensor([self._index[name] for name in names], device=self.minimum_losses.device)
        values = torch.stack([losses[name].detach().reshape(()) for name in names]).to(self.minimum_losses)
        if self.ideal == "min":
            self.minimum_losses[index] = torch.minimum(self.minimum_losses[index], values)
            ideal = self.minimum_losses[index]
        else:
            ideal = torch.zeros_like(values)
        weights = stch_weights(values, ideal, self.preferences[index], self.mu)
        return dict(zip(names, weights.unbind()))
