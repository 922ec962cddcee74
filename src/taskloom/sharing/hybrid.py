"""Hybrid sharing: hard-shared lower layers, soft-tied upper towers per task.

The lower layers are shared as in hard sharing (Caruana 1997, "Multitask learning"); the upper
layers are one tower per task tied as in soft sharing (Duong, Cohn, Bird & Cook 2015, "Low resource
dependency parsing: cross-lingual parameter sharing in a neural network parser"; Yang & Hospedales
2017, "Trace norm regularised deep multi-task learning").
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from taskloom.sharing.checkpointing import run_trunk
from taskloom.sharing.layers import as_sequential, block_ends, check_depth, head_width, output_width
from taskloom.sharing.parameters import Reach, params
from taskloom.sharing.soft import TIES, TiedTowers, check_towers
from taskloom.task import Task


class HybridSharing(TiedTowers):
    """A shared ``bottom``, then one tower and head per task; ``regularization()`` ties the towers."""

    def __init__(self, bottom: nn.Module, towers: Mapping[str, nn.Module], heads: Mapping[str, nn.Module],
                 tie: str = "l2", strength: float = 1e-3) -> None:
        super().__init__()
        if tie not in TIES:
            raise ValueError(f"tie: unknown tie {tie!r}; choose one of {TIES}")
        check_towers(list(towers.values()))
        self.bottom = bottom
        self.towers = nn.ModuleDict(dict(towers))
        self.heads = nn.ModuleDict({name: heads[name] for name in towers})
        self.task_names = list(self.towers)
        self.tie, self.strength = tie, float(strength)

    adversarial_input = "towers"

    checkpointable = True

    def representation(self, inputs: Any) -> Tensor:
        return run_trunk(self.bottom, inputs, self.checkpointing)

    def heads_forward(self, representation: Tensor) -> dict[str, Tensor]:
        return {n: self.heads[n](self.towers[n](representation)) for n in self.task_names}

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        return self.heads_forward(self.representation(inputs))

    def parameter_reach(self) -> Reach:
        groups: Reach = [(params(self.bottom), frozenset(self.task_names))]
        return groups + [(params(self.towers[n], self.heads[n]), frozenset([n])) for n in self.task_names]

    def attach_task(self, task: Task, tower: nn.Module | None = None) -> None:
        """Add a tower (given, or a copy of the first tower) and a head for ``task``."""
        first = next(iter(self.towers.values()))
        tower = tower if tower is not None else copy.deepcopy(first)
        tower.requires_grad_(True)
        check_towers([first, tower])
        self.towers[task.name] = tower
        self.heads[task.name] = task.build_head(head_width(next(iter(self.heads.values()))))
        self.task_names.append(task.name)

    def detach_task(self, name: str) -> None:
        """Drop a task's tower and head; the shared bottom and the other towers are untouched."""
        self.drop_task(name, self.towers, self.heads)


def build_hybrid(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task], split: int | None = None,
                 tie: str = "l2", strength: float = 1e-3) -> HybridSharing:
    """Layers ``[:split]`` of the trunk shared, ``[split:]`` one tied copy per task.

    ``split`` is a layer index of the trunk's Sequential (see ``taskloom.sharing.layers``);
    by default the last block is the per-task tower.
    """
    trunk = trunk_factory()
    layers = as_sequential(trunk, "hybrid")
    if split is None:
        ends = block_ends(layers)
        if len(ends) < 2:
            raise ValueError("hybrid: the trunk has a single block; give a split layer index or use 'soft'")
        split = ends[-2]
    split = check_depth(split, layers, "hybrid.split", allow_full=False)
    towers = {t.name: as_sequential(trunk_factory(), "hybrid")[split:] for t in tasks}
    width = output_width(trunk, "hybrid")
    return HybridSharing(layers[:split], towers, {t.name: t.build_head(width) for t in tasks}, tie, strength)
