"""Random loss weighting (Lin et al., TMLR 2022, "Reasonable effectiveness of random weighting").

Each step draws fresh task weights on the simplex; the paper shows this simple baseline
matches many tuned methods and helps escape bad local minima.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from taskloom.balancing.base import LossWeighting, SeededGenerator

DISTRIBUTIONS = ("normal", "uniform", "dirichlet")


class RandomLossWeighting(LossWeighting):
    """Weights drawn every step: softmax of standard normal (the paper's default) or uniform draws, or Dirichlet(1).

    The weights of the tasks present in the batch sum to 1, as in the paper (so the step
    is about 1/K of equal weighting's sum). Weights are drawn for the present tasks only.
    With ``seed`` the balancer owns a generator whose state is saved in checkpoints;
    without it, draws come from torch's global generator.
    """

    def __init__(self, task_names: Sequence[str], distribution: str = "normal", seed: int | None = None) -> None:
        super().__init__(task_names)
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"balancing.options.distribution must be one of {list(DISTRIBUTIONS)}, got {distribution!r}"
            )
        self.distribution = distribution
        self.seed = seed
        self.random = SeededGenerator(seed)

    def sample(self, count: int, device: torch.device | str = "cpu") -> Tensor:
        """One draw of ``count`` weights on the simplex."""
        device = torch.device(device)
        generator = self.random.on(device)
        if self.distribution == "normal":
            return torch.softmax(torch.randn(count, generator=generator, device=device), dim=0)
        if self.distribution == "uniform":
            return torch.softmax(torch.rand(count, generator=generator, device=device), dim=0)
        uniform = torch.rand(count, generator=generator, device=device)
        exponential = -torch.log1p(-uniform)
        return exponential / exponential.sum()

    def weights(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        unknown = [name for name in losses if name not in self.task_names]
        if unknown:
            raise KeyError(f"RLW got losses for unknown tasks {unknown}; it was built for {self.task_names}")
        names = [name for name in self.task_names if name in losses]
        drawn = self.sample(len(names), losses[names[0]].device)
        return dict(zip(names, drawn.unbind()))

    def get_extra_state(self) -> Any:
        return self.random.state()

    def set_extra_state(self, state: Any) -> None:
        self.random.load(state)
