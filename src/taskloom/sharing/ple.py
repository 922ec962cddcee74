"""Progressive layered extraction (Tang, Liu, Zhao & Gong 2020, "Progressive layered extraction (PLE): a
novel multi-task learning (MTL) model for personalized recommendations", RecSys 2020): shared and
task-specific experts with per-task gates; one level is CGC (customized gate control)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import Tensor, nn

from taskloom.sharing.layers import as_sequential, block_ends, check_depth, cut, input_width, output_width, width_at
from taskloom.sharing.mmoe import Gate, mix
from taskloom.sharing.parameters import Reach, ReachSplit, params
from taskloom.task import Task


class ExtractionLevel(nn.Module):
    """One customized gate control (CGC) level: task gates over own + shared experts, and a
    shared gate over all experts when a level follows."""

    def __init__(self, names: Sequence[str], make_expert: Callable[[], nn.Module], in_features: int,
                 shared_experts: int, task_experts: int, has_next: bool) -> None:
        super().__init__()
        self.shared = nn.ModuleList([make_expert() for _ in range(shared_experts)])
        self.tasks = nn.ModuleDict({n: nn.ModuleList([make_expert() for _ in range(task_experts)]) for n in names})
        self.gates = nn.ModuleDict({n: Gate(in_features, task_experts + shared_experts) for n in names})
        total = len(names) * task_experts + shared_experts
        self.shared_gate = Gate(in_features, total) if has_next else None

    def forward(self, task_inputs: dict[str, Tensor], shared_input: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        shared_out = [e(shared_input) for e in self.shared]
        task_out = {n: [e(task_inputs[n]) for e in experts] for n, experts in self.tasks.items()}
        mixed = {n: mix(self.gates[n](task_inputs[n]), task_out[n] + shared_out) for n in self.tasks}
        if self.shared_gate is None:
            return mixed, None
        every = [o for outs in task_out.values() for o in outs] + shared_out
        return mixed, mix(self.shared_gate(shared_input), every)


class PLE(ReachSplit):
    """Stacked extraction levels, then one head per task (Tang et al. 2020)."""

    adversarial_input = None

    def __init__(self, levels: Sequence[ExtractionLevel], heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.levels = nn.ModuleList(list(levels))
        self.heads = nn.ModuleDict(heads)
        self.task_names = list(heads)

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        task_inputs = {n: inputs for n in self.task_names}
        shared: Tensor | None = inputs
        for level in self.levels:
            task_inputs, shared = level(task_inputs, shared)
        return {n: self.heads[n](task_inputs[n]) for n in self.task_names}

    def parameter_reach(self) -> Reach:
        every = frozenset(self.task_names)
        last = len(self.levels) - 1
        groups: Reach = []
        for l, level in enumerate(self.levels):
            groups.append((params(level.shared, level.shared_gate), every))
            for n in self.task_names:
                groups.append((params(level.tasks[n]), every if l < last else frozenset([n])))
                groups.append((params(level.gates[n]), every if l < last - 1 else frozenset([n])))
        return groups + [(params(self.heads[n]), frozenset([n])) for n in self.task_names]


def build_ple(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task], num_levels: int = 1,
              shared_experts: int = 2, task_experts: int = 1, cuts: Sequence[int] | None = None,
              in_features: int | None = None) -> PLE:
    """CGC (``num_levels=1``, each expert a fresh trunk) or PLE with the trunk's Sequential cut
    into ``num_levels`` stages at layer indices ``cuts`` (default: the first block ends)."""
    if num_levels < 1 or shared_experts < 1 or task_experts < 0:
        raise ValueError("ple: num_levels and shared_experts must be at least 1, task_experts at least 0")
    names = [t.name for t in tasks]
    probe = trunk_factory()
    gate_width = input_width(probe, in_features, "ple")
    if num_levels == 1:
        level = ExtractionLevel(names, trunk_factory, gate_width, shared_experts, task_experts, has_next=False)
        width = output_width(probe, "ple")
        return PLE([level], {t.name: t.build_head(width) for t in tasks})
    layers = as_sequential(probe, "ple")
    if cuts is None:
        ends = block_ends(layers)
        if len(ends) < num_levels:
            raise ValueError(f"ple: the trunk has {len(ends)} blocks, fewer than num_levels={num_levels}")
        cuts = ends[: num_levels - 1]
    cuts = sorted(check_depth(c, layers, "ple.cuts", allow_full=False) for c in cuts)
    if len(set(cuts)) != num_levels - 1:
        raise ValueError(f"ple.cuts: give {num_levels - 1} distinct layer indices for {num_levels} levels, got {cuts}")
    widths = [gate_width] + [width_at(layers, c, "ple.cuts", flat=True) for c in cuts]
    levels = []
    for l in range(num_levels):
        def make_expert(l: int = l) -> nn.Module:
            return cut(as_sequential(trunk_factory(), "ple"), cuts)[l]

        levels.append(ExtractionLevel(names, make_expert, widths[l], shared_experts, task_experts,
                                      has_next=l < num_levels - 1))
    width = output_width(probe, "ple")
    return PLE(levels, {t.name: t.build_head(width) for t in tasks})
