"""Reference scores every comparison carries: a trivial predictor and, for tables, a linear model.

The trivial predictor ignores the inputs: the training mean (regression), the class prior
(binary, multilabel) or the majority class (multiclass, tagging). A neural model that does
not beat it has learned nothing usable. The linear model is scikit-learn's logistic or ridge
regression on the same encoded features and the same split (tables only: 2-D inputs).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import torch

from taskloom.data.dataset import MultiTaskDataset
from taskloom.task import Task

log = logging.getLogger(__name__)


def _labelled(data: MultiTaskDataset, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of the labelled units of ``task`` and the mask that selects them (tokens for tagging)."""
    target, mask = data.targets[task.name], data.masks[task.name]
    unit = task.kind_spec.unit_mask(mask, target, data.inputs)
    return (target if unit is None else target[unit]), unit


def _constant_output(task: Task, train_target: torch.Tensor, units: int) -> torch.Tensor:
    """The trivial predictor's output (logits or values) for ``units`` units, from the training labels."""
    values = train_target.double()
    if task.kind in ("binary", "multilabel"):
        prior = values.reshape(len(values), -1).mean(0).clamp(1e-6, 1 - 1e-6)
        logit = torch.log(prior / (1 - prior))
        return logit.reshape(1, -1).expand(units, -1).float()
    if task.kind in ("multiclass", "tagging"):
        counts = torch.bincount(values.long().reshape(-1), minlength=task.num_outputs).double()
        return torch.log((counts + 1e-3) / counts.sum()).reshape(1, -1).expand(units, -1).float()
    mean = values.reshape(len(values), -1).mean(0)
    return mean.reshape(1, -1).expand(units, -1).float()


def trivial_scores(train: MultiTaskDataset, test: MultiTaskDataset, task: Task) -> dict[str, Any] | None:
    """Test metrics of the trivial predictor for ``task`` (None without labelled rows on either side)."""
    train_target, _ = _labelled(train, task)
    test_target, _ = _labelled(test, task)
    if len(train_target) == 0 or len(test_target) == 0:
        return None
    output = _constant_output(task, train_target, len(test_target))
    return dict(task.kind_spec.metrics(output, test_target, task))


def _features(data: MultiTaskDataset, mask: torch.Tensor | None) -> np.ndarray:
    inputs = data.inputs if mask is None else data.inputs[mask]
    return inputs.detach().cpu().double().numpy()


def linear_scores(train: MultiTaskDataset, test: MultiTaskDataset, task: Task, seed: int = 0) -> dict[str, Any] | None:
    """Test metrics of logistic (classification) or ridge (regression) regression on the encoded features.

    None where it does not apply: inputs that are not one feature vector per row, tagging tasks,
    scikit-learn not installed, or fewer than two classes in training.
    """
    if not isinstance(train.inputs, torch.Tensor) or train.inputs.dim() != 2 or task.kind == "tagging":
        return None
    try:
        from sklearn.linear_model import LogisticRegression, Ridge
    except ImportError:
        log.info("scikit-learn is not installed: no linear reference (pip install 'taskloom[data]')")
        return None
    y_train, train_mask = _labelled(train, task)
    y_test, test_mask = _labelled(test, task)
    if len(y_train) == 0 or len(y_test) == 0:
        return None
    x_train, x_test = _features(train, train_mask), _features(test, test_mask)
    y = y_train.detach().cpu().numpy()
    if task.kind == "regression":
        model = Ridge(alpha=1.0).fit(x_train, y.reshape(len(y), -1))
        output = torch.from_numpy(model.predict(x_test).reshape(len(x_test), -1)).float()
    elif task.kind == "multilabel":
        columns = []
        for j in range(y.shape[1]):
            if len(np.unique(y[:, j])) < 2:
                prior = float(np.clip(y[:, j].mean(), 1e-6, 1 - 1e-6))
                columns.append(np.full(len(x_test), math.log(prior / (1 - prior))))
                continue
            fit = LogisticRegression(max_iter=2000, random_state=seed).fit(x_train, y[:, j])
            columns.append(fit.decision_function(x_test))
        output = torch.from_numpy(np.stack(columns, 1)).float()
    else:
        labels = y.astype(np.int64).reshape(-1)
        if len(np.unique(labels)) < 2:
            return None
        fit = LogisticRegression(max_iter=2000, random_state=seed).fit(x_train, labels)
        if task.kind == "binary":
            output = torch.from_numpy(fit.decision_function(x_test)).float().reshape(-1, 1)
        else:
            scores = np.full((len(x_test), task.num_outputs), -np.inf)
            scores[:, fit.classes_] = fit.predict_log_proba(x_test)
            output = torch.from_numpy(scores).float()
    return dict(task.kind_spec.metrics(output, y_test, task))


def reference_scores(splits: Any, tasks: Sequence[Task], seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per task: ``{"trivial": metrics, "linear": metrics or None}`` on the test split."""
    out = {}
    for task in tasks:
        out[task.name] = {"trivial": trivial_scores(splits.train, splits.test, task),
                          "linear": linear_scores(splits.train, splits.test, task, seed)}
    return out
