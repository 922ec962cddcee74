"""A batch: inputs, and per task a target, a mask of labelled rows and optional row weights."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


def move(value: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """Move a tensor, or a dict/list/tuple of tensors, to ``device``."""
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, dict):
        return {k: move(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(move(v, device, non_blocking) for v in value)
    return value


@dataclass
class Batch:
    """Inputs plus name-keyed targets, masks and sample weights.

    ``masks[name]`` is a bool tensor marking the labelled rows of task ``name``; a task
    absent from ``masks`` is labelled on every row of this batch (the fast path: losses do
    no masking work). :meth:`mask` gives every task's mask either way.
    ``weights[name]`` holds optional per-row sample weights.
    """

    inputs: Any
    targets: dict[str, Tensor]
    masks: dict[str, Tensor] = field(default_factory=dict)
    weights: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """This batch with every tensor on ``device``."""
        return Batch(
            move(self.inputs, device, non_blocking),
            move(self.targets, device, non_blocking),
            move(self.masks, device, non_blocking),
            move(self.weights, device, non_blocking),
        )

    def mask(self, name: str) -> Tensor:
        """Task ``name``'s mask: the stored one, or all True (one entry per row) when every row is labelled."""
        mask = self.masks.get(name)
        if mask is not None:
            return mask
        target = self.targets[name]
        return torch.ones(len(target), dtype=torch.bool, device=target.device)

    def __len__(self) -> int:
        first = self.inputs if isinstance(self.inputs, Tensor) else next(iter(self.inputs.values()))
        return len(first)
