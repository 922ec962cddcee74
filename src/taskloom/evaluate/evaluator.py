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
    was_training = model.training
    model.eval()
    kept: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]] = {t.name: [] for t in tasks}
    try:
        for batch in BatchLoader(data, batch_size, shuffle=False):
            batch = batch.to(device)
            outputs = model(batch.inputs)
            for task in tasks:
                output, target = outputs[task.name].float(), batch.targets[task.name]
                weight = batch.weights.get(task.name)
                mask = task.kind_spec.unit_mask(batch.masks.get(task.name), target, batch.inputs)  # tokens, for tagging
                if mask is not None:
                    output, target = output[mask], target[mask]
                    if weight is not None:  # a row's weight applies to each of its units
                        weight = weight.reshape(len(weight), *[1] * (mask.dim() - 1)).expand(mask.shape)[mask]
                kept[task.name].append((output.cpu(), target.cpu(), None if weight is None else weight.cpu()))
    finally:
        model.train(was_training)
    results: dict[str, dict[str, Any]] = {}
    for task in tasks:
        parts = kept[task.name]
        output = torch.cat([p[0] for p in parts]) if parts else torch.empty(0)
        labelled = len(output)
        if labelled == 0:
            results[task.name] = {"labelled": 0, "note": NO_LABELS}
            continue
        target = torch.cat([p[1] for p in parts])
        weight = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
        metrics: dict[str, Any] = dict(task.kind_spec.metrics(output, target, task))
        metrics["loss"] = masked_loss(task, output, target, None, weight).item()
        metrics["labelled"] = labelled
        results[task.name] = metrics
    return results
