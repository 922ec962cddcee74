"""Feature interaction between task towers (after Xia & Ding 2019): at a chosen layer each task's
features are fused with the other towers' features, then each tower goes on alone."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from taskloom.sharing.layers import as_sequential, block_ends, check_depth, output_width, width_at
from taskloom.sharing.parameters import Reach, ReachSplit, params
from taskloom.task import Task


class Fusion(nn.Module):
    """h_k + W_k [m ; h_k * m], where m is the mean of the other tasks' features: a residual exchange."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * width, width)

    def forward(self, own: Tensor, others: Tensor) -> Tensor:
        return own + self.linear(torch.cat([others, own * others], dim=-1))


class FeatureInteraction(ReachSplit):
    """Per-task lower and upper towers with a :class:`Fusion` per task between them."""

    adversarial_input = None

    def __init__(self, lower: Mapping[str, nn.Module], upper: Mapping[str, nn.Module],
                 heads: Mapping[str, nn.Module], width: int) -> None:
        super().__init__()
        self.task_names = list(lower)
        self.lower = nn.ModuleDict(dict(lower))
        self.upper = nn.ModuleDict({n: upper[n] for n in self.task_names})
        self.heads = nn.ModuleDict({n: heads[n] for n in self.task_names})
        self.fusion = nn.ModuleDict({n: Fusion(width) for n in self.task_names} if len(self.task_names) > 1 else {})

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        low = {n: self.lower[n](inputs) for n in self.task_names}
        if len(self.task_names) > 1:
            total = torch.stack(list(low.values())).sum(0)
            k = len(self.task_names)
            low = {n: self.fusion[n](h, (total - h) / (k - 1)) for n, h in low.items()}
        return {n: self.heads[n](self.upper[n](low[n])) for n in self.task_names}

    def parameter_reach(self) -> Reach:
        every = frozenset(self.task_names)
        groups: Reach = [(params(self.lower[n]), every) for n in self.task_names]
        return groups + [
            (params(self.fusion[n] if n in self.fusion else None, self.upper[n], self.heads[n]), frozenset([n]))
            for n in self.task_names
        ]


def build_interaction(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task],
                      at: int | None = None) -> FeatureInteraction:
    """A fresh trunk per task, features exchanged after layer index ``at`` (default: before the last block)."""
    trunks = {t.name: trunk_factory() for t in tasks}
    sequences = {n: as_sequential(tr, "interaction") for n, tr in trunks.items()}
    first = next(iter(sequences.values()))
    if at is None:
        ends = block_ends(first)
        if len(ends) < 2:
            raise ValueError("interaction: the trunk has a single block; give the layer index 'at'")
        at = ends[-2]
    at = check_depth(at, first, "interaction.at", allow_full=True)
    width = width_at(first, at, "interaction.at")
    heads = {t.name: t.build_head(output_width(trunks[t.name], "interaction")) for t in tasks}
    return FeatureInteraction({n: s[:at] for n, s in sequences.items()}, {n: s[at:] for n, s in sequences.items()},
                              heads, width)
