"""Hard parameter sharing (Caruana 1997, "Multitask learning", Machine Learning 28(1)): one shared trunk,
one head per task."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import Parameter

from taskloom.sharing.base import MultiTaskModule, unique
from taskloom.sharing.checkpointing import run_trunk
from taskloom.task import Task


class MultiTaskModel(MultiTaskModule):
    """A trunk ``nn.Module`` shared by all tasks plus one head per task.

    Heads come from ``heads`` (name -> module) or are built from ``tasks`` with each
    task's default head on ``out_features`` inputs (read from ``trunk.out_features``
    when not given). Any ``nn.Module`` mapping a batch of inputs to a (N, F) tensor can
    be the trunk.
    """

    def __init__(
        self,
        trunk: nn.Module,
        tasks: Sequence[Task] | None = None,
        heads: Mapping[str, nn.Module] | None = None,
        out_features: int | None = None,
    ) -> None:
        super().__init__()
        if (tasks is None) == (heads is None):
            raise ValueError("give exactly one of tasks (default heads) or heads (your own modules)")
        self.trunk = trunk
        if heads is None:
            width = out_features if out_features is not None else getattr(trunk, "out_features", None)
            if width is None:
                raise ValueError("the trunk has no out_features attribute; pass out_features=")
            heads = {task.name: task.build_head(int(width)) for task in tasks}
        self.heads = nn.ModuleDict(dict(heads))
        self.task_names = list(self.heads)

    checkpointable = True

    def representation(self, inputs: Any) -> Tensor:
        return run_trunk(self.trunk, inputs, self.checkpointing)

    def heads_forward(self, representation: Tensor) -> dict[str, Tensor]:
        return {name: head(representation) for name, head in self.heads.items()}

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        return self.heads_forward(self.representation(inputs))

    def shared_parameters(self) -> list[Parameter]:
        return unique(self.trunk.parameters())

    def task_parameters(self, name: str) -> list[Parameter]:
        return unique(self.heads[name].parameters())


@torch.no_grad()
def predict(model: nn.Module, inputs: Any, tasks: Sequence[Task]) -> dict[str, Tensor]:
    """Every task's prediction (class labels or values) from one forward pass."""
    was_training = model.training
    model.eval()
    try:
        outputs = model(inputs)
    finally:
        model.train(was_training)
    return {task.name: task.kind_spec.predict(outputs[task.name]) for task in tasks}


def build_hard(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task]) -> MultiTaskModel:
    """Hard sharing from a trunk factory: the uniform builder every architecture registers."""
    return MultiTaskModel(trunk_factory(), tasks=tasks)
