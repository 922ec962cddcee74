"""Mean and standard deviation of a column seen in pieces, in one pass and numerically stable.

Each piece's count, mean and sum of squared deviations are merged with the pairwise update of
Chan, Golub & LeVeque (1979, "Updating formulae and a pairwise algorithm for computing sample
variances"), in float64: no sum of squares of raw values, so large offsets lose no precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations (``m2``) of the finite values added so far."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: np.ndarray) -> None:
        """Merge a piece of values; NaN and infinite values are skipped."""
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            return
        mean = float(values.mean())
        m2 = float(np.square(values - mean).sum())
        self.merge(RunningMoments(len(values), mean, m2))

    def merge(self, other: "RunningMoments") -> None:
        """Chan et al.'s pairwise update: these moments become those of both pieces together."""
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean += delta * other.count / total
        self.m2 += other.m2 + delta * delta * self.count * other.count / total
        self.count = total

    @property
    def std(self) -> float:
        """The population standard deviation (ddof 0, as ``numpy.std``); 0 with no values."""
        return float(np.sqrt(max(self.m2, 0.0) / self.count)) if self.count else 0.0


__all__ = ["RunningMoments"]
