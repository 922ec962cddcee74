"""Evaluation of a multi-task model on a data set: masked per-task metrics and losses."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from taskloom.data.dataset import BatchLoader, MultiTaskDataset
from taskloom.losses import masked_loss
from taskloom.task import Task

NO_LABELS = "no labelled rows in this split"


@torch.no_grad()
def collect_outputs(
    model: nn.Module,
    data: MultiTaskDataset,
    tasks: Sequence[Task],
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, torch.Tensor | None]]:
    """Per task, the model's outputs on its labelled units, their targets, weights and the row of each unit.

    A unit is a row, or a token for tagging tasks; ``row`` is the unit's row position in ``data``.
    """
    was_training = model.training
    model.eval()
    kept: dict[str, list[tuple[torch.Tensor, ...]]] = {t.name: [] for t in tasks}
    offset = 0
    try:
        for batch in BatchLoader(data, batch_size, shuffle=False):
            batch = batch.to(device)
            outputs = model(batch.inputs)
            for task in tasks:
                output, target = outputs[task.name].float(), batch.targets[task.name]
                weight = batch.weights.get(task.name)
                rows = torch.arange(offset, offset + len(target))
                mask = task.kind_spec.unit_mask(batch.masks.get(task.name), target, batch.inputs)  # tokens, for tagging
                if mask is not None:
                    output, target = output[mask], target[mask]
                    shape = [len(rows)] + [1] * (mask.dim() - 1)
                    rows = rows.reshape(shape).expand(mask.shape)[mask.cpu()]
                    if weight is not None:  # a row's weight applies to each of its units
                        weight = weight.reshape(len(weight), *[1] * (mask.dim() - 1)).expand(mask.shape)[mask]
                kept[task.name].append((output.cpu(), target.cpu(), None if weight is None else weight.cpu(), rows))
            offset += len(next(iter(batch.targets.values())))
    finally:
        model.train(was_training)
    collected: dict[str, dict[str, torch.Tensor | None]] = {}
    for task in tasks:
        parts = kept[task.name]
        if not parts or sum(len(p[0]) for p in parts) == 0:
            collected[task.name] = {"output": torch.empty(0), "target": torch.empty(0), "weight": None,
                                    "row": torch.empty(0, dtype=torch.long)}
            continue
        collected[task.name] = {
            "output": torch.cat([p[0] for p in parts]),
            "target": torch.cat([p[1] for p in parts]),
            "weight": None if parts[0][2] is None else torch.cat([p[2] for p in parts]),
            "row": torch.cat([p[3] for p in parts]),
        }
    return collected


def metrics_from_outputs(collected: dict[str, dict[str, torch.Tensor | None]],
                         tasks: Sequence[Task]) -> dict[str, dict[str, Any]]:
    """Metrics per task from :func:`collect_outputs`, plus ``loss`` and ``labelled`` (the unit count)."""
    results: dict[str, dict[str, Any]] = {}
    for task in tasks:
        part = collected[task.name]
        output = part["output"]
        labelled = len(output)
        if labelled == 0:
            results[task.name] = {"labelled": 0, "note": NO_LABELS}
            continue
        metrics: dict[str, Any] = dict(task.kind_spec.metrics(output, part["target"], task))
        metrics["loss"] = masked_loss(task, output, part["target"], None, part["weight"]).item()
        metrics["labelled"] = labelled
        results[task.name] = metrics
    return results


def evaluate_model(
    model: nn.Module,
    data: MultiTaskDataset,
    tasks: Sequence[Task],
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, Any]]:
    """Metrics per task over its labelled rows only, plus ``loss`` and ``labelled`` (the row count).

    A task with no labelled row in ``data`` is reported as ``{"labelled": 0, "note": ...}``,
    never as 0 or NaN.
    """
    return metrics_from_outputs(collect_outputs(model, data, tasks, batch_size, device), tasks)
