"""Masked per-task losses: the mean over a task's labelled rows, nothing for a task without labels."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from taskloom.data.batch import Batch
from taskloom.task import Task


def masked_loss(
    task: Task,
    output: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """Weighted mean of the task's loss over labelled units.

    Each unit's weight is mask x sample weight x class weight; masked units are zeroed
    with ``torch.where`` so a NaN or garbage label there cannot leak into the loss or
    its gradient. With no labelled unit the result is 0 with a zero gradient.
    """
    if mask is None and sample_weight is None:
        return task.kind_spec.mean_loss(output, target, task.class_weight_tensor(output.device))
    loss, weight = _weighted_units(task, output, target, mask, sample_weight)
    if weight is None:
        return loss.mean()
    return (loss * weight).sum() / weight.sum().clamp_min(torch.finfo(loss.dtype).tiny)


def _weighted_units(task: Task, output: Tensor, target: Tensor, mask: Tensor | None,
                    sample_weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Each unit's loss (masked units zeroed) and its weight (None: every unit weighs 1)."""
    class_weights = task.class_weight_tensor(output.device)
    if mask is not None:
        target = torch.where(mask.reshape(mask.shape + (1,) * (target.dim() - mask.dim())), target, 0)
    loss, class_weight = task.kind_spec.row_loss(output, target, class_weights)
    weight = None
    for factor in (sample_weight, class_weight):
        if factor is not None:
            factor = factor.to(loss.dtype)
            if factor.dim() < loss.dim():  # a row's weight, for each of its units (tokens)
                factor = factor.reshape(factor.shape + (1,) * (loss.dim() - factor.dim())).expand(loss.shape)
            weight = factor if weight is None else weight * factor
    if mask is not None:
        ones = torch.ones((), dtype=loss.dtype, device=loss.device)
        weight = torch.where(mask, ones if weight is None else weight, 0)
        loss = torch.where(mask, loss, 0)
    return loss, weight


def masked_loss_parts(
    task: Task,
    output: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    sample_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The numerator and the denominator of :func:`masked_loss` (weighted sum of unit losses, sum of weights).

    Under data parallelism the ranks' numerators and denominators are summed before dividing,
    so that a task's loss is its mean over the global batch's labelled units.
    """
    loss, weight = _weighted_units(task, output, target, mask, sample_weight)
    if weight is None:
        return loss.sum(), torch.tensor(float(loss.numel()), dtype=loss.dtype, device=loss.device)
    return (loss * weight).sum(), weight.sum()


def labelled_tasks(batch: Batch, names: list[str]) -> list[str]:
    """The tasks with at least one labelled row in ``batch`` (one host sync for all masked tasks)."""
    masked = [n for n in names if n in batch.masks]
    if not masked:
        return list(names)
    counts = torch.stack([batch.masks[n].reshape(-1).any() for n in masked]).tolist()
    absent = {n for n, present in zip(masked, counts) if not present}
    return [n for n in names if n not in absent]


def task_losses(outputs: Mapping[str, Tensor], batch: Batch,
                tasks: Mapping[str, Task] | Sequence[Task]) -> dict[str, Tensor]:
    """Loss of every task that has a labelled row in the batch, keyed by task name.

    ``tasks`` is a mapping from name to :class:`Task` or a sequence of tasks (the list a model
    was built with). Each task's kind turns the batch's mask into one over its loss units
    (tokens for tagging, where padding is read from the inputs' lengths).
    """
    by_name = tasks_by_name(tasks)
    losses = {}
    for name in labelled_tasks(batch, list(by_name)):
        task, target = by_name[name], batch.targets[name]
        mask = task.kind_spec.unit_mask(batch.masks.get(name), target, batch.inputs)
        losses[name] = masked_loss(task, outputs[name], target, mask, batch.weights.get(name))
    return losses


def tasks_by_name(tasks: Mapping[str, Task] | Sequence[Task]) -> Mapping[str, Task]:
    """``tasks`` as a name -> :class:`Task` mapping; a clear TypeError for anything else."""
    if isinstance(tasks, Mapping):
        wrong = {name: type(task).__name__ for name, task in tasks.items() if not isinstance(task, Task)}
        if wrong:
            raise TypeError(f"tasks: every value must be a taskloom Task; got {wrong}")
        return tasks
    if isinstance(tasks, Sequence) and not isinstance(tasks, (str, bytes)):
        wrong = [f"[{i}] {type(task).__name__}" for i, task in enumerate(tasks) if not isinstance(task, Task)]
        if wrong:
            raise TypeError(f"tasks: every item must be a taskloom Task; got {', '.join(wrong)}")
        names = [task.name for task in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: task names must be unique, got {names}")
        return {task.name: task for task in tasks}
    raise TypeError(f"tasks must be a list of Task objects or a mapping from task name to Task, "
                    f"not {type(tasks).__name__}")
