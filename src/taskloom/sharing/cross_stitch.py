"""Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert 2016, "Cross-stitch networks for multi-task
learning", CVPR 2016): task towers mixed by learned linear units.

After each chosen layer, task k's activation becomes sum_j alpha[k, j] * x_j, with alpha
initialized to alpha_self on the diagonal and alpha_other elsewhere (the paper's 0.9/0.1).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from taskloom.sharing.layers import as_sequential, block_ends, check_depth, cut, output_width
from taskloom.sharing.parameters import Reach, ReachSplit, params
from taskloom.task import Task


class CrossStitchUnit(nn.Module):
    """A K x K mixing matrix, one parameter row per task so the last unit's rows stay task-specific."""

    def __init__(self, num_tasks: int, alpha_self: float = 0.9, alpha_other: float = 0.1) -> None:
        super().__init__()
        self.rows = nn.ParameterList([
            nn.Parameter(torch.full((num_tasks,), float(alpha_other)).index_fill(0, torch.tensor([k]), alpha_self))
            for k in range(num_tasks)
        ])

    @property
    def alpha(self) -> Tensor:
        return torch.stack(list(self.rows))

    def forward(self, activations: Sequence[Tensor]) -> list[Tensor]:
        mixed = torch.tensordot(self.alpha, torch.stack(list(activations)), dims=1)
        return list(mixed.unbind(0))


class CrossStitchNetwork(ReachSplit):
    """One tower per task cut into stages, a cross-stitch unit between consecutive stages."""

    def __init__(self, stages: Mapping[str, Sequence[nn.Module]], heads: Mapping[str, nn.Module],
                 alpha_self: float = 0.9, alpha_other: float | None = None) -> None:
        super().__init__()
        self.task_names = list(stages)
        counts = {len(s) for s in stages.values()}
        if len(counts) != 1:
            raise ValueError("every task's tower must have the same number of stages")
        k = len(self.task_names)
        if alpha_other is None:
            alpha_other = (1.0 - alpha_self) / (k - 1) if k > 1 else 0.0
        self.stages = nn.ModuleDict({n: nn.ModuleList(list(s)) for n, s in stages.items()})
        self.units = nn.ModuleList([CrossStitchUnit(k, alpha_self, alpha_other) for _ in range(counts.pop() - 1)])
        self.heads = nn.ModuleDict({n: heads[n] for n in self.task_names})

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        xs = [inputs] * len(self.task_names)
        for s in range(len(self.units) + 1):
            xs = [self.stages[n][s](x) for n, x in zip(self.task_names, xs)]
            if s < len(self.units):
                xs = self.units[s](xs)
        return {n: self.heads[n](x) for n, x in zip(self.task_names, xs)}

    def parameter_reach(self) -> Reach:
        every = frozenset(self.task_names)
        last = len(self.units)
        groups: Reach = []
        for u, unit in enumerate(self.units):
            if u < last - 1:
                groups.append((params(unit), every))
            else:
                groups += [(params(row), frozenset([n])) for n, row in zip(self.task_names, unit.rows)]
        for n in self.task_names:
            groups += [(params(stage), every) for stage in self.stages[n][:last]]
            groups.append((params(self.stages[n][last], self.heads[n]), frozenset([n])))
        return groups


def build_cross_stitch(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task],
                       after: Sequence[int] | None = None, alpha_self: float = 0.9,
                       alpha_other: float | None = None, identity: bool = False) -> CrossStitchNetwork:
    """A fresh trunk per task, cut at the layer indices ``after`` (default: every block end but the last).

    ``alpha_other`` defaults to (1 - alpha_self) / (K - 1), so each row sums to one as in the
    paper's 0.9/0.1 for two tasks; ``identity=True`` starts from independent towers.
    """
    if identity:
        alpha_self, alpha_other = 1.0, 0.0
    trunks = {t.name: trunk_factory() for t in tasks}
    sequences = {n: as_sequential(trunk, "cross_stitch") for n, trunk in trunks.items()}
    first = next(iter(sequences.values()))
    if after is None:
        after = block_ends(first)[:-1]
    depths = [check_depth(d, first, "cross_stitch.after", allow_full=False) for d in after]
    stages = {n: cut(seq, depths) for n, seq in sequences.items()}
    heads = {t.name: t.build_head(output_width(trunks[t.name], "cross_stitch")) for t in tasks}
    return CrossStitchNetwork(stages, heads, alpha_self=alpha_self, alpha_other=alpha_other)
