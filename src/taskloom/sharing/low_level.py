"""Low-level supervision (Søgaard & Goldberg 2016, "Deep multi-task learning with low level
tasks supervised at lower layers"): each task's head reads the shared trunk at its own depth."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from taskloom.sharing.layers import as_sequential, check_depth, check_task_keys, cut, width_at
from taskloom.sharing.parameters import Reach, ReachSplit, params
from taskloom.task import Task


class DepthTapped(ReachSplit):
    """A shared Sequential cut at the tasks' depths; shared by low-level supervision and the cascade."""

    def _init_trunk(self, layers: nn.Sequential, depths: Mapping[str, int]) -> None:
        top = max(depths.values())
        self.depths = dict(depths)
        self.stage_ends = sorted(set(depths.values()))
        self.stages = nn.ModuleList(cut(layers[:top], self.stage_ends))

    def features(self, inputs: Any) -> dict[int, Tensor]:
        """The trunk's output at every depth a task reads."""
        out: dict[int, Tensor] = {}
        x = inputs
        for end, stage in zip(self.stage_ends, self.stages):
            x = stage(x)
            out[end] = x
        return out

    def stage_reach(self, reach_of_task: Callable[[str], set[str]]) -> Reach:
        """Each stage is reached by every task tapping at or above it (and what those tasks reach)."""
        groups: Reach = []
        for end, stage in zip(self.stage_ends, self.stages):
            reach: set[str] = set()
            for n in self.task_names:
                if self.depths[n] >= end:
                    reach |= reach_of_task(n)
            groups.append((params(stage), frozenset(reach)))
        return groups


def task_depths(layers: nn.Sequential, tasks: Sequence[Task], depths: Mapping[str, int] | None,
                field: str) -> dict[str, int]:
    depths = dict(depths or {})
    check_task_keys(list(depths), [t.name for t in tasks], field)
    return {t.name: check_depth(depths.get(t.name, len(layers)), layers, f"{field}.{t.name}") for t in tasks}


class LowLevelSupervision(DepthTapped):
    """Task k's head reads the trunk at ``depths[k]`` (layer index, see ``taskloom.sharing.layers``)."""

    adversarial_input = "heads"

    def __init__(self, layers: nn.Sequential, heads: Mapping[str, nn.Module], depths: Mapping[str, int]) -> None:
        super().__init__()
        self.task_names = list(heads)
        self._init_trunk(layers, depths)
        self.heads = nn.ModuleDict(dict(heads))

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        features = self.features(inputs)
        return {n: self.heads[n](features[self.depths[n]]) for n in self.task_names}

    def parameter_reach(self) -> Reach:
        groups = self.stage_reach(lambda n: {n})
        return groups + [(params(self.heads[n]), frozenset([n])) for n in self.task_names]

    def attach_task(self, task: Task, depth: int | None = None) -> None:
        """A head for ``task`` at ``depth`` (default: the deepest existing tap)."""
        depth = self.stage_ends[-1] if depth is None else depth
        if depth not in self.stage_ends:
            raise ValueError(f"depth: a new task taps an existing depth {self.stage_ends}, got {depth}")
        layers = nn.Sequential(*[m for stage in self.stages for m in stage])
        self.heads[task.name] = task.build_head(width_at(layers, depth, f"depth of task {task.name!r}"))
        self.depths[task.name] = depth
        self.task_names.append(task.name)


def build_low_level(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task],
                    depths: Mapping[str, int] | None = None) -> LowLevelSupervision:
    """Heads tapped at ``depths`` (task name -> layer index of the trunk's Sequential; default the top)."""
    layers = as_sequential(trunk_factory(), "low_level")
    at = task_depths(layers, tasks, depths, "low_level.depths")
    heads = {t.name: t.build_head(width_at(layers, at[t.name], f"low_level.depths.{t.name}")) for t in tasks}
    return LowLevelSupervision(layers, heads, at)
