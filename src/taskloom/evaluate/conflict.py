"""Gradient conflict: cosine similarity of per-task gradients on the shared parameters.

A negative cosine means two tasks pull the shared parameters in opposing directions
(Yu et al. 2020, "Gradient surgery for multi-task learning"). An analysis tool, run every
N steps: it pays one backward pass per task.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor

from taskloom.sharing.base import MultiTaskModule


def cosine_matrix(gradients: Tensor, eps: float = 1e-12) -> Tensor:
    """K x K cosine similarities of the rows of a K x P gradient matrix.

    A row with (near) zero norm has no direction: its similarities are 0, its diagonal 1.
    """
    if gradients.dim() != 2:
        raise ValueError(f"gradients must be a K x P matrix, got shape {tuple(gradients.shape)}")
    g = gradients.double()
    norms = g.norm(dim=1)
    safe = torch.where(norms > eps, norms, torch.ones_like(norms))
    unit = g / safe[:, None]
    unit = torch.where((norms > eps)[:, None], unit, torch.zeros_like(unit))
    cos = (unit @ unit.T).clamp(-1.0, 1.0)
    cos.fill_diagonal_(1.0)
    return cos.to(gradients.dtype if gradients.is_floating_point() else torch.float64)


def task_gradients(
    model: MultiTaskModule, losses: Mapping[str, Tensor], retain_graph: bool = True
) -> dict[str, Tensor]:
    """Flattened gradient of each task's loss with respect to ``model.shared_parameters()``.

    Uses ``torch.autograd.grad`` so no ``.grad`` attribute is touched; a shared parameter
    that a task's loss does not reach contributes zeros.
    """
    shared = list(model.shared_parameters())
    if not shared:
        raise ValueError(f"{type(model).__name__} has no shared parameters; gradient conflict needs some")
    out: dict[str, Tensor] = {}
    names = list(losses)
    for index, name in enumerate(names):
        keep = retain_graph or index < len(names) - 1
        grads = torch.autograd.grad(losses[name], shared, retain_graph=keep, allow_unused=True)
        out[name] = torch.cat(
            [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, shared)]
        ).detach()
    return out


def gradient_conflict(model: MultiTaskModule, losses: Mapping[str, Tensor]) -> dict[str, dict[str, float]]:
    """``{task: {task: cosine}}`` of the per-task shared-parameter gradients of one batch's losses."""
    grads = task_gradients(model, losses)
    names = list(grads)
    cos = cosine_matrix(torch.stack([grads[n] for n in names])).tolist()
    return {a: {b: cos[i][j] for j, b in enumerate(names)} for i, a in enumerate(names)}


class PairwiseMean:
    """Running mean of ``{task: {task: value}}`` matrices, cell by cell; NaN cells are skipped.

    Tasks absent from a batch (no labelled rows) simply contribute nothing to their cells.
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        self.task_names = list(task_names)
        self.reset()

    def reset(self) -> None:
        self._sum: dict[tuple[str, str], float] = {}
        self._count: dict[tuple[str, str], int] = {}

    def add(self, matrix: Mapping[str, Mapping[str, float]]) -> None:
        for a, row in matrix.items():
            if a not in self.task_names:
                raise ValueError(f"unknown task {a!r}; this tracker follows {self.task_names}")
            for b, value in row.items():
                if value is None or math.isnan(value):
                    continue
                self._sum[(a, b)] = self._sum.get((a, b), 0.0) + float(value)
                self._count[(a, b)] = self._count.get((a, b), 0) + 1

    def mean(self) -> dict[str, dict[str, float | None]]:
        """The mean per cell so far; ``None`` where no value was recorded."""
        return {
            a: {b: (self._sum[(a, b)] / self._count[(a, b)]) if (a, b) in self._count else None
                for b in self.task_names}
            for a in self.task_names
        }

    def on_epoch_end(self) -> dict[str, dict[str, float | None]]:
        """The epoch's mean matrix; the tracker starts afresh for the next epoch."""
        result = self.mean()
        self.reset()
        return result


class ConflictTracker(PairwiseMean):
    """Per-epoch mean of the gradient cosine matrix, measured on the batches it is given."""

    def measure(self, model: MultiTaskModule, losses: Mapping[str, Tensor]) -> dict[str, dict[str, float]]:
        matrix = gradient_conflict(model, losses)
        self.add(matrix)
        return matrix
