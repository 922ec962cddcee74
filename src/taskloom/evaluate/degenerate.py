"""Can a split measure a task at all? Label counts per split, and the reason a metric is undefined there.

A task whose labels in a split are constant (one class, zero variance) or too few has no
meaningful metric on that split: AUROC needs both classes, R^2 and a relative change of MSE
need spread, and a handful of rows gives any metric a standard error as wide as the effect.
Such a task is reported as undefined on that split and left out of delta-m, never averaged in.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from taskloom.data.dataset import MultiTaskDataset
from taskloom.task import Task

log = logging.getLogger(__name__)

MIN_PER_CLASS = 5  # positives (and negatives) an AUROC needs to say anything
MIN_LABELLED = 10  # labelled units any metric needs


def _units(data: MultiTaskDataset, task: Task) -> tuple[np.ndarray, int]:
    """The labelled units' targets of ``task`` (tokens for tagging) and the labelled row count."""
    target = data.targets[task.name]
    mask = data.masks[task.name]
    unit = task.kind_spec.unit_mask(mask if not bool(mask.all()) else None, target, data.inputs)
    rows = int(mask.reshape(len(mask), -1).any(1).sum()) if mask.dim() > 1 else int(mask.sum())
    values = target if unit is None else target[unit]
    return values.detach().cpu().numpy(), rows


def label_summary(data: MultiTaskDataset, task: Task) -> dict[str, Any]:
    """Counts of ``task``'s labels in ``data``: labelled units, and per class (classification) or spread."""
    values, rows = _units(data, task)
    summary: dict[str, Any] = {"labelled": int(len(values)), "rows": rows}
    if task.kind == "regression":
        flat = values.reshape(len(values), -1).astype(np.float64)
        summary["std"] = float(flat.std(0).min()) if len(flat) else None
        summary["distinct"] = int(len(np.unique(flat, axis=0))) if len(flat) else 0
    elif task.kind == "multilabel":
        labels = values.reshape(len(values), -1)
        summary["positives"] = [int(v) for v in labels.sum(0)]
    else:
        codes, counts = np.unique(values.astype(np.int64).reshape(-1), return_counts=True)
        summary["classes"] = {str(int(c)): int(n) for c, n in zip(codes, counts)}
    return summary


def undefined_reason(task: Task, summary: dict[str, Any]) -> str | None:
    """Why ``task``'s main metric cannot be measured on a split with these label counts (None: it can)."""
    labelled = summary["labelled"]
    if labelled == 0:
        return "no labelled rows"
    if task.kind == "regression":
        if summary["distinct"] <= 1 or not summary["std"]:
            return f"all {labelled} labelled targets are the same value (zero variance)"
    elif task.kind == "multilabel":
        usable = [p for p in summary["positives"] if MIN_PER_CLASS <= p <= labelled - MIN_PER_CLASS]
        if not usable:
            return (f"no label has {MIN_PER_CLASS}+ positives and {MIN_PER_CLASS}+ negatives among "
                    f"{labelled} labelled rows (positives per label: {summary['positives']})")
    else:
        classes = summary["classes"]
        if len(classes) <= 1:
            only = next(iter(classes), "?")
            return f"all {labelled} labelled units are class {only} (one class)"
        if task.kind == "binary" and task.main_metric == "auroc":
            smallest = min(classes.get("0", 0), classes.get("1", 0))
            if smallest < MIN_PER_CLASS:
                return (f"{classes.get('1', 0)} positives and {classes.get('0', 0)} negatives among {labelled} "
                        f"labelled rows; AUROC needs at least {MIN_PER_CLASS} of each")
    if labelled < MIN_LABELLED:
        return f"only {labelled} labelled units (at least {MIN_LABELLED} are needed)"
    return None


def check_splits(splits: Any, tasks: Sequence[Task], names: Sequence[str] = ("val", "test")) -> dict[str, Any]:
    """Per split and task: label counts and, where the metric is undefined, why (each logged as a warning)."""
    out: dict[str, Any] = {}
    for split in names:
        data = getattr(splits, split)
        entries = {}
        for task in tasks:
            summary = label_summary(data, task)
            reason = undefined_reason(task, summary)
            entries[task.name] = {**summary, "defined": reason is None, "reason": reason}
            if reason is not None:
                log.warning("task %r: its %s cannot be measured on the %s split: %s; it is marked undefined "
                            "there%s", task.name, task.main_metric, split, reason,
                            " and left out of delta-m" if split == "test" else
                            " (checkpoint selection cannot use it)")
        out[split] = entries
    return out
