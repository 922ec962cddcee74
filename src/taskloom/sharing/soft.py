"""Soft parameter sharing: one tower per task, tied by a penalty on their distance.

The L2 tie follows Duong, Cohn, Bird & Cook 2015 ("Low resource dependency parsing: cross-lingual
parameter sharing in a neural network parser", ACL 2015); the trace-norm tie follows Yang &
Hospedales 2017 ("Trace norm regularised deep multi-task learning", ICLR 2017 workshop), last-axis flattening.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from taskloom.sharing.layers import output_width
from taskloom.sharing.parameters import Reach, ReachSplit, params
from taskloom.task import Task

TIES = ("l2", "trace")


def tie_penalty(towers: Sequence[nn.Module], tie: str = "l2") -> Tensor | None:
    """Distance between corresponding parameters of same-shaped towers (None for fewer than two).

    ``l2``: sum over task pairs of squared distances, K * sum_k ||theta_k - mean||^2.
    ``trace``: nuclear norm of each parameter stacked over tasks (K x numel), summed.
    """
    if tie not in TIES:
        raise ValueError(f"tie: unknown tie {tie!r}; choose one of {TIES}")
    if len(towers) < 2:
        return None
    groups = list(zip(*[list(t.parameters()) for t in towers]))
    total: Tensor | None = None
    for group in groups:
        stacked = torch.stack([p.reshape(-1) for p in group])
        if tie == "l2":
            term = len(group) * (stacked - stacked.mean(0)).pow(2).sum()
        else:
            term = torch.linalg.svdvals(stacked).sum()
        total = term if total is None else total + term
    return total


def check_towers(towers: Sequence[nn.Module]) -> None:
    shapes = [[tuple(p.shape) for p in t.parameters()] for t in towers]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("soft sharing ties corresponding parameters, so every task's tower must have the same shapes")


class TiedTowers(ReachSplit):
    """Shared helpers of architectures with one tied tower per task."""

    towers: nn.ModuleDict
    tie: str
    strength: float

    def regularization(self) -> Tensor | None:
        if not self.strength:
            return None
        penalty = tie_penalty(list(self.towers.values()), self.tie)
        return None if penalty is None else self.strength * penalty


class SoftSharing(TiedTowers):
    """One tower and head per task; ``regularization()`` ties the towers (Duong et al. 2015).

    ``tie`` is ``"l2"`` (Duong et al. 2015) or ``"trace"`` (Yang & Hospedales 2017); the towers
    are independent modules, so adding or removing a task trains or drops only its own.
    """

    def __init__(self, towers: Mapping[str, nn.Module], heads: Mapping[str, nn.Module],
                 tie: str = "l2", strength: float = 1e-3) -> None:
        super().__init__()
        if tie not in TIES:
            raise ValueError(f"tie: unknown tie {tie!r}; choose one of {TIES}")
        if set(towers) != set(heads):
            raise ValueError(f"towers {sorted(towers)} and heads {sorted(heads)} must name the same tasks")
        check_towers(list(towers.values()))
        self.towers = nn.ModuleDict(dict(towers))
        self.heads = nn.ModuleDict({name: heads[name] for name in towers})
        self.task_names = list(self.towers)
        self.tie, self.strength = tie, float(strength)

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        return {name: self.heads[name](self.towers[name](inputs)) for name in self.task_names}

    def parameter_reach(self) -> Reach:
        return [(params(self.towers[n], self.heads[n]), frozenset([n])) for n in self.task_names]

    def attach_task(self, task: Task, tower: nn.Module | None = None) -> None:
        """Add a tower (given, or a copy of the first tower as a warm start) and a head for ``task``."""
        import copy

        tower = tower if tower is not None else copy.deepcopy(next(iter(self.towers.values())))
        tower.requires_grad_(True)
        check_towers([next(iter(self.towers.values())), tower])
        self.towers[task.name] = tower
        self.heads[task.name] = task.build_head(output_width(tower, f"tower of task {task.name!r}"))
        self.task_names.append(task.name)

    def detach_task(self, name: str) -> None:
        """Drop a task's tower and head; the other towers are untouched."""
        self.drop_task(name, self.towers, self.heads)


def build_soft(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task],
               tie: str = "l2", strength: float = 1e-3) -> SoftSharing:
    """Soft sharing: a fresh trunk per task as its tower, each with the task's default head."""
    towers = {task.name: trunk_factory() for task in tasks}
    heads = {t.name: t.build_head(output_width(towers[t.name], "soft")) for t in tasks}
    return SoftSharing(towers, heads, tie=tie, strength=strength)
