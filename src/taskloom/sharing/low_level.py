"""Low-level supervision (Søgaard & Goldberg 2016, "Deep multi-task learning with low level
tasks supervised at lower layers", ACL 2016): each task's head reads the shared trunk at its own depth."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from taskloom.sharing.checkpointing import run_layer_outputs, run_trunk
from taskloom.sharing.layers import as_sequential, check_depth, check_task_keys, cut, width_at
from taskloom.sharing.parameters import Reach, ReachSplit, params
from taskloom.task import Task


def is_layered(trunk: nn.Module) -> bool:
    """A trunk that gives every layer's output itself (``layer_outputs``, ``layer_features``): the sequence trunks."""
    return callable(getattr(trunk, "layer_outputs", None)) and isinstance(getattr(trunk, "layer_features", None), list)


def tap_count(trunk: nn.Module, architecture: str) -> int:
    """How many depths a head can tap: the layers of a layered trunk, else the modules of its Sequential."""
    return len(trunk.layer_features) if is_layered(trunk) else len(as_sequential(trunk, architecture))


def tap_width(trunk: nn.Module, depth: int, field: str) -> int:
    """The feature width a head reads at ``depth``."""
    if is_layered(trunk):
        return int(trunk.layer_features[depth - 1])
    return width_at(as_sequential(trunk, field.split(".")[0]), depth, field)


class DepthTapped(ReachSplit):
    """A shared trunk read at the tasks' depths; shared by low-level supervision and the cascade.

    The trunk is cut into ``stages`` at the tapped depths when it is a Sequential (or has
    ``.layers``); a layered trunk (``layer_outputs``, such as ``bilstm`` and ``transformer``)
    is kept whole as ``trunk`` and depth ``d`` is the output of its ``d``-th layer.
    """

    checkpointable = True

    def _init_trunk(self, trunk: nn.Module, depths: Mapping[str, int]) -> None:
        top = max(depths.values())
        self.depths = dict(depths)
        self.stage_ends = sorted(set(depths.values()))
        self.layered = is_layered(trunk)
        self.tap_widths = {d: tap_width(trunk, d, f"depth {d}") for d in self.stage_ends}
        if self.layered:
            if top != len(trunk.layer_features):
                raise ValueError(
                    f"depths: the deepest head taps layer {top} of a trunk with {len(trunk.layer_features)} layers; "
                    f"the layers above would never train: set the trunk option num_layers to {top}"
                )
            self.trunk = trunk
            self.stages = nn.ModuleList()
        else:
            self.stages = nn.ModuleList(cut(as_sequential(trunk, "depths")[:top], self.stage_ends))

    def features(self, inputs: Any) -> dict[int, Tensor]:
        """The trunk's output at every depth a task reads."""
        if self.layered:
            outputs = run_layer_outputs(self.trunk, inputs, self.checkpointing)
            return {end: outputs[end - 1] for end in self.stage_ends}
        out: dict[int, Tensor] = {}
        x = inputs
        for end, stage in zip(self.stage_ends, self.stages):
            x = run_trunk(stage, x, self.checkpointing)
            out[end] = x
        return out

    def _trunk_groups(self) -> list[tuple[list, int]]:
        """Trunk parameter groups with the lowest depth whose output they change."""
        if not self.layered:
            return [(params(stage), end) for end, stage in zip(self.stage_ends, self.stages)]
        by_depth = getattr(self.trunk, "parameter_depths", None)
        return by_depth() if callable(by_depth) else [(params(self.trunk), 1)]

    def stage_reach(self, reach_of_task: Callable[[str], set[str]]) -> Reach:
        """Each trunk part is reached by every task tapping at or above it (and what those tasks reach)."""
        groups: Reach = []
        for group, lowest in self._trunk_groups():
            reach: set[str] = set()
            for n in self.task_names:
                if self.depths[n] >= lowest:
                    reach |= reach_of_task(n)
            groups.append((group, frozenset(reach)))
        return groups


def check_tap(depth: object, trunk: nn.Module, field: str) -> int:
    """A tap depth validated against the trunk, with an error naming the option."""
    if not is_layered(trunk):
        return check_depth(depth, as_sequential(trunk, field.split(".")[0]), field)
    count = len(trunk.layer_features)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= count:
        raise ValueError(f"{field}: {depth!r} is not a layer of the trunk's {count} layers (1..{count})")
    return depth


def task_depths(trunk: nn.Module, tasks: Sequence[Task], depths: Mapping[str, int] | None,
                field: str) -> dict[str, int]:
    depths = dict(depths or {})
    check_task_keys(list(depths), [t.name for t in tasks], field)
    top = tap_count(trunk, field.split(".")[0])
    return {t.name: check_tap(depths.get(t.name, top), trunk, f"{field}.{t.name}") for t in tasks}


class LowLevelSupervision(DepthTapped):
    """Task k's head reads the trunk at ``depths[k]`` (layer index, see ``taskloom.sharing.layers``)."""

    adversarial_input = "heads"

    def __init__(self, trunk: nn.Module, heads: Mapping[str, nn.Module], depths: Mapping[str, int]) -> None:
        super().__init__()
        self.task_names = list(heads)
        self._init_trunk(trunk, depths)
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
        self.heads[task.name] = task.build_head(self.tap_widths[depth])
        self.depths[task.name] = depth
        self.task_names.append(task.name)

    def detach_task(self, name: str) -> None:
        """Drop a task's head; trunk stages above the deepest remaining tap, which no loss would reach, go too."""
        self.check_removable(name)
        top = max(d for n, d in self.depths.items() if n != name)
        if self.layered and top < self.stage_ends[-1]:
            raise ValueError(f"cannot remove {name!r}: it is the only task at the trunk's top layer, whose layers "
                             "would then train for no task; tap another task there first")
        del self.heads[name]
        del self.depths[name]
        self.task_names.remove(name)
        if not self.layered:
            kept = [i for i, end in enumerate(self.stage_ends) if end <= top]
            self.stages = nn.ModuleList([self.stages[i] for i in kept])
            self.stage_ends = [self.stage_ends[i] for i in kept]
            self.tap_widths = {end: self.tap_widths[end] for end in self.stage_ends}


def build_low_level(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task],
                    depths: Mapping[str, int] | None = None) -> LowLevelSupervision:
    """Heads tapped at ``depths`` (task name -> layer index of the trunk's Sequential, or layer number
    1..num_layers of a sequence trunk; default the top)."""
    trunk = trunk_factory()
    at = task_depths(trunk, tasks, depths, "low_level.depths")
    heads = {t.name: t.build_head(tap_width(trunk, at[t.name], f"low_level.depths.{t.name}")) for t in tasks}
    return LowLevelSupervision(trunk, heads, at)
