"""Equal and static loss weighting: a fixed weighted sum of task losses."""
from __future__ import annotations

from typing import Mapping, Sequence

from torch import Tensor

from taskloom.balancing.base import LossWeighting


class StaticWeighting(LossWeighting):
    """Weighted sum with fixed, user-given weights, one per task name."""

    def __init__(self, task_names: Sequence[str], weights: Mapping[str, float]) -> None:
        super().__init__(task_names)
        unknown = sorted(set(weights) - set(task_names))
        missing = [n for n in task_names if n not in weights]
        if unknown:
            raise ValueError(f"balancing.options.weights names unknown tasks {unknown}; tasks are {list(task_names)}")
        if missing:
            raise ValueError(f"balancing.options.weights has no weight for tasks {missing}; give one per task")
        for name, value in weights.items():
            if not value >= 0:
                raise ValueError(f"balancing.options.weights.{name} must be a non-negative number, got {value!r}")
        self.fixed = {name: float(weights[name]) for name in task_names}

    def weights(self, losses: Mapping[str, Tensor]) -> Mapping[str, float]:
        return {name: self.fixed[name] for name in losses}


class EqualWeighting(StaticWeighting):
    """Every task's loss with weight 1: the plain sum."""

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__(task_names, {name: 1.0 for name in task_names})
