"""GradDrop (Chen et al., NeurIPS 2020): keep, per coordinate, only gradients of one randomly chosen sign.

P = (1 + sum_i g_i / sum_i |g_i|) / 2 is each coordinate's sign purity; with U ~ Uniform(0, 1),
task i keeps its positive entries where P > U and its negative entries where P < U (plus a
``leak`` fraction of what is dropped). Applied to every coordinate of the K x P matrix given
(the paper's choice is the shared representation: use mode="representation").
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import GradientBalancer


def graddrop(grads: Tensor, generator: torch.Generator | None = None, leak: float = 0.0,
             uniform: Tensor | None = None) -> Tensor:
    """GradDrop's update from the K x P matrix; ``uniform`` (P values in [0, 1)) replaces the random draw."""
    if not 0 <= leak <= 1:
        raise ValueError(f"graddrop leak must be in [0, 1], got {leak!r}")
    total = grads.sum(dim=0)
    magnitude = grads.abs().sum(dim=0)
    purity = 0.5 * (1 + total / torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude)))
    if uniform is None:
        uniform = torch.rand(purity.shape, generator=generator, dtype=purity.dtype).to(purity.device)
    side = torch.sign(purity - uniform)  # +1: keep the positive entries here, -1: the negative ones
    kept = (grads * side).relu_().sum(dim=0) * side
    if leak == 0:
        return kept
    return leak * total + (1 - leak) * kept


class GradDrop(GradientBalancer):
    """GradDrop (Chen et al. 2020): sign-consistency gradient dropout, with its own seeded RNG."""

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 leak: float = 0.0, seed: int = 0) -> None:
        super().__init__(task_names, mode=mode, batched=batched)
        self.leak = leak
        self.generator = torch.Generator().manual_seed(seed)

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        return graddrop(grads, self.generator, self.leak), None
