"""What every multi-task architecture offers: a dict of outputs, and its parameters split by role."""
from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor, nn
from torch.nn import Parameter


class MultiTaskModule(nn.Module):
    """Base of every sharing architecture.

    ``forward(inputs)`` returns ``{task name: output}``. ``shared_parameters`` are those
    that more than one task's loss reaches; ``task_parameters(name)`` are reached by that
    task's loss only. Gradient-level balancing combines per-task gradients of the shared
    ones; each task-specific parameter gets its own task's gradient.

    Architectures that have a single shared representation also implement
    ``representation(inputs)`` and ``heads_forward(representation)`` so that balancing
    methods can work with gradients of the representation (Sener & Koltun 2018).
    """

    task_names: list[str]
    #: True when the architecture calls its shared trunk through :func:`taskloom.sharing.checkpointing.run_trunk`
    checkpointable: bool = False
    #: set by :func:`taskloom.sharing.checkpointing.enable_checkpointing`: recompute the trunk's activations in backward
    checkpointing: bool = False

    def shared_parameters(self) -> list[Parameter]:
        raise NotImplementedError

    def task_parameters(self, name: str) -> list[Parameter]:
        raise NotImplementedError

    def regularization(self) -> Tensor | None:
        """A penalty the architecture adds to the objective (soft sharing's tie), or None."""
        return None

    def representation(self, inputs: Any) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no single shared representation")

    def heads_forward(self, representation: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no single shared representation")

    def check_removable(self, name: str) -> None:
        """Refuse to remove a task this model lacks, or its only task."""
        if name not in self.task_names:
            raise KeyError(f"unknown task {name!r}; this model has tasks {self.task_names}")
        if len(self.task_names) == 1:
            raise ValueError(f"cannot remove {name!r}, the model's only task")

    def drop_task(self, name: str, *per_task: nn.ModuleDict) -> None:
        """Remove task ``name`` (refused as :meth:`check_removable` says): its entry of each ``per_task`` dict."""
        self.check_removable(name)
        for modules in per_task:
            del modules[name]
        self.task_names.remove(name)

    @property
    def has_representation(self) -> bool:
        return type(self).representation is not MultiTaskModule.representation


def unique(parameters: Iterable[Parameter]) -> list[Parameter]:
    """Trainable parameters in order, each once."""
    seen: set[int] = set()
    out = []
    for p in parameters:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
