"""The self-describing model directory: ``model.json`` beside the checkpoints.

It holds, as JSON data (never pickle), everything needed to rebuild and apply a trained model
without its training data: the trunk with its resolved arguments (input size included), the
architecture and its options, the task specs (kinds, classes, labels, decision thresholds) and
the fitted preprocessing of table runs. :func:`taskloom.load` reads it back.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from taskloom.config import Config
from taskloom.data.dataset import DataSplits, MultiTaskDataset
from taskloom.task import Task
from taskloom.train.timing import write_json_atomically

log = logging.getLogger(__name__)

MODEL_SPEC_FILE = "model.json"
SPEC_FORMAT = 1


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars and tuples turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _input_spec(splits: DataSplits) -> dict[str, Any]:
    inputs = splits.train.inputs
    if isinstance(inputs, Tensor):
        return {"kind": "table" if splits.info.get("preprocessing") else "tensor",
                "shape": list(splits.input_shape), "dtype": str(inputs.dtype).replace("torch.", "")}
    return {"kind": "mapping", "shape": list(splits.input_shape), "keys": sorted(inputs)}


def task_spec(task: Task, info: dict[str, Any], threshold: float | str) -> dict[str, Any]:
    """One task as JSON: what rebuilds its head and what turns its output into labels."""
    spec: dict[str, Any] = {
        "name": task.name, "kind": task.kind, "num_outputs": task.num_outputs, "target": task.target,
        "main_metric": task.main_metric, "head_hidden": list(task.head_hidden), "role": task.role,
        "label_names": None if task.label_names is None else [str(n) for n in task.label_names],
    }
    if task.kind == "binary":
        spec["positive_class"] = info.get("positive_class", {}).get(task.name, 1)
        spec["decision_threshold"] = threshold
    if task.kind == "multiclass":
        spec["class_names"] = info.get("class_names", {}).get(task.name)
    scaling = (info.get("target_standardization") or {}).get(task.name)
    if scaling is not None:
        spec["target_standardization"] = {"mean": float(scaling[0]), "scale": float(scaling[1])}
    return _plain(spec)


def model_spec(config: Config, tasks: Sequence[Task], splits: DataSplits, multitask: bool = True) -> dict[str, Any]:
    """The JSON description of the model ``build_model(config, tasks, splits, single_task=not multitask)`` builds."""
    from taskloom import __version__
    from taskloom.train.runner import keeps_per_task_models, trunk_arguments

    thresholds = {t.name: t.decision_threshold for t in config.tasks or []}
    return _plain({
        "format": SPEC_FORMAT,
        "taskloom_version": __version__,
        "trunk": {"name": config.model.trunk.name, "arguments": trunk_arguments(config, splits)},
        "architecture": {"name": config.model.architecture if multitask else "hard",
                         "options": dict(config.model.options) if multitask else {},
                         **({"per_task_models": True} if multitask and keeps_per_task_models(config) else {})},
        "tasks": [task_spec(t, splits.info, thresholds.get(t.name, 0.5)) for t in tasks],
        "input": _input_spec(splits),
        "preprocessing": splits.info.get("preprocessing"),
        "config": config.model_dump(mode="json"),
    })


def write_model_artifact(model_dir: str | Path, config: Config, tasks: Sequence[Task], splits: DataSplits,
                         multitask: bool = True) -> Path:
    """Write ``model_dir/model.json`` (atomically); call it once the model directory exists."""
    path = Path(model_dir) / MODEL_SPEC_FILE
    previous = json.loads(path.read_text()) if path.is_file() else {}
    spec = model_spec(config, tasks, splits, multitask)
    if "chosen_thresholds" in previous:  # a resumed run keeps what an earlier end of training chose
        spec["chosen_thresholds"] = previous["chosen_thresholds"]
    write_json_atomically(path, spec)
    return path


def f1_threshold(logits: Tensor, labels: Tensor) -> tuple[float, float]:
    """The probability cut maximizing F1 of ``sigmoid(logit) > cut`` over ``labels`` (0/1), and that F1.

    Cuts lie midway (in logit space) between consecutive distinct logits, so no row sits on one.
    """
    logits = logits.detach().double().reshape(-1)
    labels = labels.detach().double().reshape(-1)
    positives = float(labels.sum())
    if len(logits) == 0 or positives == 0:
        raise ValueError("F1 needs at least one positive label")
    order = torch.argsort(logits, descending=True)
    ranked, hits = logits[order], labels[order]
    true_positive = torch.cumsum(hits, 0)
    predicted = torch.arange(1, len(ranked) + 1, dtype=torch.float64)
    f1 = 2 * true_positive / (predicted + positives)  # 2TP / (2TP + FP + FN), FP = k - TP, FN = P - TP
    distinct = torch.ones(len(ranked), dtype=torch.bool)  # a cut can only fall after the last of tied logits
    distinct[:-1] = ranked[:-1] != ranked[1:]
    f1 = torch.where(distinct, f1, torch.full_like(f1, -1.0))
    k = int(torch.argmax(f1))
    below = ranked[k + 1] if k + 1 < len(ranked) else ranked[k] - 2.0
    cut = float((ranked[k] + below) / 2)
    return 1.0 / (1.0 + math.exp(-cut)), float(f1[k])


def choose_decision_thresholds(model_dir: str | Path, val: MultiTaskDataset | None) -> dict[str, dict[str, float]]:
    """For binary tasks with ``decision_threshold: f1``: the F1-best cut on ``val`` for each saved checkpoint.

    Saved in ``model.json`` under ``chosen_thresholds`` (checkpoint -> task -> probability); a task
    without a labelled positive validation row keeps 0.5, with a warning. Call it at the end of training.
    """
    from taskloom.serve.predictor import load

    path = Path(model_dir) / MODEL_SPEC_FILE
    spec = json.loads(path.read_text())
    wanted = [t["name"] for t in spec["tasks"] if t.get("decision_threshold") == "f1"]
    if not wanted:
        return {}
    chosen: dict[str, dict[str, float]] = {}
    for checkpoint in sorted((Path(model_dir) / "checkpoints").glob("*.pt")):
        predictor = load(model_dir, checkpoint=checkpoint.stem, thresholds=False, include_auxiliary=True)
        logits = predictor.logits(val.inputs) if val is not None and len(val) else {}
        chosen[checkpoint.stem] = {}
        for name in wanted:
            mask = val.masks[name] if val is not None and name in logits else None
            try:
                if mask is None:
                    raise ValueError("no validation split")
                cut, score = f1_threshold(logits[name][mask], val.targets[name][mask])
            except ValueError as error:
                log.warning("task %r: decision_threshold f1 cannot be chosen (%s); 0.5 is used", name, error)
                cut = 0.5
            else:
                log.info("task %r (%s): decision threshold %.4f, validation F1 %.4f", name, checkpoint.stem, cut,
                         score)
            chosen[checkpoint.stem][name] = cut
    spec["chosen_thresholds"] = chosen
    write_json_atomically(path, spec)
    return chosen
