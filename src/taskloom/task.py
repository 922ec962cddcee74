"""Tasks and task kinds: what a task predicts, its default head, its loss and its metrics.

A :class:`Task` names one prediction problem; its :class:`TaskKind` (binary, multiclass,
multilabel, regression, ...) knows the head, the per-row loss, how outputs become
predictions, which metrics apply and whether higher is better for each.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskloom.evaluate import metrics as M
from taskloom.registry import Registry

TASK_KINDS: Registry["TaskKind"] = Registry("task kind")
TASK_ROLES = ("main", "auxiliary")


def register_kind(name: str, summary: str):
    """Class decorator: register one instance of a :class:`TaskKind` under ``name``."""

    def decorate(cls: type) -> type:
        TASK_KINDS.add(name, cls(), summary)
        return cls

    return decorate


@dataclass(frozen=True)
class Condition:
    """Learn a task only on rows where another task's label equals a value (ESMM-style)."""

    task: str
    equals: float


@dataclass(frozen=True)
class TargetTransform:
    """A label made from a numeric column: ``threshold`` t gives binary ``value > t``; ``bins`` e_1 < ... < e_m
    give multiclass, class i for e_i <= value < e_(i+1) (class 0 below e_1, class m from e_m on)."""

    threshold: float | None = None
    bins: tuple[float, ...] | None = None

    def check(self, task: "Task") -> None:
        """Refuse a transform that does not fit ``task``'s kind and outputs, saying what to set."""
        where = f"task {task.name!r}: transform"
        if (self.threshold is None) == (self.bins is None):
            raise ValueError(f"{where} needs exactly one of threshold or bins")
        if self.threshold is not None:
            if not math.isfinite(self.threshold):
                raise ValueError(f"{where}.threshold must be a finite number, got {self.threshold}")
            if task.kind != "binary":
                raise ValueError(f"{where}.threshold makes a binary label (value > threshold); set kind: binary")
            return
        edges = list(self.bins or ())
        if not edges or not all(math.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"{where}.bins must be finite, strictly increasing edges, got {edges}")
        if task.kind != "multiclass":
            raise ValueError(f"{where}.bins makes a class per interval; set kind: multiclass")
        if task.num_outputs != len(edges) + 1:
            raise ValueError(f"{where}.bins {edges} make {len(edges) + 1} classes; set num_outputs: {len(edges) + 1}")


@dataclass
class Task:
    """One prediction problem of a multi-task model.

    ``num_outputs`` is the number of classes (multiclass), labels (multilabel) or
    regression targets; binary tasks have one output. ``target`` names the column or
    data-set target the labels come from (default: the task's name).
    """

    name: str
    kind: str
    num_outputs: int = 1
    target: str | None = None
    class_weights: Sequence[float] | None = None
    main_metric: str | None = None
    only_where: Condition | None = None
    head_hidden: Sequence[int] = ()
    sample_weight: str | None = None
    label_names: Sequence[str] | None = field(default=None, repr=False)
    transform: TargetTransform | None = None
    role: str = "main"

    def __post_init__(self) -> None:
        if self.role not in TASK_ROLES:
            raise ValueError(f"task {self.name!r}: role {self.role!r} is unknown; use main or auxiliary")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("task name must be a non-empty string")
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; known: {', '.join(TASK_KINDS)}")
        if self.target is None:
            self.target = self.name
        self.kind_spec.validate_task(self)
        if self.main_metric is None:
            self.main_metric = self.kind_spec.main_metric
        if self.main_metric not in self.kind_spec.higher_is_better:
            raise ValueError(
                f"task {self.name!r}: main_metric {self.main_metric!r} is not a {self.kind} metric; "
                f"choose one of {sorted(self.kind_spec.higher_is_better)}"
            )
        if self.only_where is not None and self.only_where.task == self.name:
            raise ValueError(f"task {self.name!r}: only_where cannot refer to the task itself")
        if self.transform is not None:
            self.transform.check(self)

    @property
    def kind_spec(self) -> "TaskKind":
        return TASK_KINDS.get(self.kind)

    @property
    def higher_is_better(self) -> bool:
        """Whether a higher value of the main metric is better."""
        return self.kind_spec.higher_is_better[self.main_metric]

    def build_head(self, in_features: int) -> nn.Module:
        """The default head: an MLP with ``head_hidden`` layers ending in ``num_outputs`` units."""
        layers: list[nn.Module] = []
        width = in_features
        for hidden in self.head_hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, self.num_outputs))
        return nn.Sequential(*layers) if len(layers) > 1 else layers[0]

    def class_weight_tensor(self, device: torch.device | None = None) -> Tensor | None:
        if self.class_weights is None:
            return None
        return torch.as_tensor(self.class_weights, dtype=torch.float32, device=device)


class TaskKind:
    """How one kind of task turns head outputs into losses, predictions and metrics."""

    name: str = ""
    main_metric: str = ""
    higher_is_better: dict[str, bool] = {}

    def validate_task(self, task: Task) -> None:
        if task.num_outputs < 1:
            raise ValueError(f"task {task.name!r}: num_outputs must be at least 1")
        if task.class_weights is not None:
            raise ValueError(f"task {task.name!r}: class_weights apply to classification tasks only")

    def row_loss(self, output: Tensor, target: Tensor, class_weights: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Unreduced loss per labelled unit, and the per-unit class weight (or None)."""
        raise NotImplementedError

    def mean_loss(self, output: Tensor, target: Tensor, class_weights: Tensor | None) -> Tensor:
        """The loss of a fully labelled, unweighted batch (the fast path; kinds may fuse it)."""
        loss, weight = self.row_loss(output, target, class_weights)
        if weight is None:
            return loss.mean()
        return (loss * weight).sum() / weight.sum()

    def unit_mask(self, mask: Tensor | None, target: Tensor, inputs: Any) -> Tensor | None:
        """The mask over this kind's loss units, from a batch's mask (None: every row labelled) and inputs.

        A unit is a row for every kind but token tagging, whose units are tokens (see :mod:`taskloom.tagging`).
        """
        return mask

    def predict(self, output: Tensor) -> Tensor:
        """Labels (or values) predicted from head outputs."""
        raise NotImplementedError

    def metrics(self, output: Tensor, target: Tensor, task: Task) -> dict[str, float | None]:
        raise NotImplementedError

    def check_labels(self, target: Tensor, mask: Tensor, task: Task) -> None:
        """Raise a ValueError naming the task and the first bad row, if any labelled value is invalid."""
        labelled = target[mask]
        bad = ~torch.isfinite(labelled.double())
        if labelled.dim() > 1:
            bad = bad.reshape(len(labelled), -1).any(1)
        self._raise_first(bad, mask, task, "is not a finite number")

    @staticmethod
    def _raise_first(bad: Tensor, mask: Tensor, task: Task, what: str) -> None:
        if bool(bad.any()):
            rows = torch.nonzero(mask.reshape(len(mask), -1).any(1) if mask.dim() > 1 else mask).flatten()
            row = int(rows[int(torch.nonzero(bad).flatten()[0])]) if bad.dim() == 1 else -1
            raise LabelError(task, row, what)


class LabelError(ValueError):
    """An invalid label of ``task`` at ``row`` of the data checked (-1: unknown), optionally placed in a split.

    ``source_row`` is that row's index in the whole data set, when the split knows it.
    """

    def __init__(self, task: Task, row: int, what: str, split: str | None = None,
                 source_row: int | None = None) -> None:
        self.task, self.row, self.what, self.split, self.source_row = task, row, what, split, source_row
        where = f"{split} split, " if split else ""
        origin = "" if source_row is None else f" (row {source_row} of the whole data set)"
        super().__init__(f"{where}task {task.name!r} (target {task.target!r}): label at row {row} {what}{origin}; "
                         "fix the data or mark the cell as missing")

    def located(self, split: str, rows: Sequence[int] | None = None) -> "LabelError":
        """This error naming ``split`` and, when ``rows`` maps split rows to data-set rows, the original row."""
        source = int(rows[self.row]) if rows is not None and 0 <= self.row < len(rows) else None
        return LabelError(self.task, self.row, self.what, split, source)


@register_kind("binary", "one probability per row; BCE loss; accuracy, macro-F1, AUROC")
class BinaryKind(TaskKind):
    name = "binary"
    main_metric = "auroc"
    higher_is_better = {"accuracy": True, "macro_f1": True, "auroc": True, "loss": False}

    def validate_task(self, task: Task) -> None:
        if task.num_outputs != 1:
            raise ValueError(f"task {task.name!r}: a binary task has num_outputs 1, got {task.num_outputs}")
        if task.class_weights is not None and len(task.class_weights) != 2:
            raise ValueError(f"task {task.name!r}: class_weights of a binary task are [weight of 0, weight of 1]")

    def row_loss(self, output, target, class_weights):
        logit = output.reshape(-1)
        target = target.to(logit.dtype)
        loss = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
        weight = None if class_weights is None else class_weights[target.long()]
        return loss, weight

    def predict(self, output):
        return (output.reshape(-1) > 0).long()

    def metrics(self, output, target, task):
        logit = output.reshape(-1).float()
        target = target.long()
        predicted = self.predict(logit)
        return {
            "accuracy": M.accuracy(predicted, target),
            "macro_f1": M.macro_f1(predicted, target, 2),
            "auroc": M.auroc(logit, target),
        }

    def check_labels(self, target, mask, task):
        super().check_labels(target, mask, task)
        labelled = target[mask]
        self._raise_first((labelled != 0) & (labelled != 1), mask, task, "is not 0 or 1")


@register_kind("multiclass", "one of C classes per row; cross-entropy; accuracy, macro-F1")
class MulticlassKind(TaskKind):
    name = "multiclass"
    main_metric = "accuracy"
    higher_is_better = {"accuracy": True, "macro_f1": True, "loss": False}

    def validate_task(self, task: Task) -> None:
        if task.num_outputs < 2:
            raise ValueError(f"task {task.name!r}: a multiclass task needs num_outputs >= 2 (the class count)")
        if task.class_weights is not None and len(task.class_weights) != task.num_outputs:
            raise ValueError(
                f"task {task.name!r}: class_weights has {len(task.class_weights)} entries for {task.num_outputs} classes"
            )

    def row_loss(self, output, target, class_weights):
        target = target.long()
        loss = F.cross_entropy(output, target, reduction="none")
        weight = None if class_weights is None else class_weights[target]
        return loss, weight

    def mean_loss(self, output, target, class_weights):
        return F.cross_entropy(output, target.long(), weight=class_weights)

    def predict(self, output):
        return output.argmax(-1)

    def metrics(self, output, target, task):
        predicted = self.predict(output)
        target = target.long()
        return {"accuracy": M.accuracy(predicted, target), "macro_f1": M.macro_f1(predicted, target, task.num_outputs)}

    def check_labels(self, target, mask, task):
        super().check_labels(target, mask, task)
        labelled = target[mask].double()
        bad = (labelled < 0) | (labelled >= task.num_outputs) | (labelled != labelled.round())
        self._raise_first(bad, mask, task, f"is not a class index in 0..{task.num_outputs - 1}")


@register_kind("multilabel", "L independent binary labels per row; BCE; accuracy, macro-F1, AUROC")
class MultilabelKind(TaskKind):
    name = "multilabel"
    main_metric = "auroc"
    higher_is_better = {"accuracy": True, "macro_f1": True, "auroc": True, "loss": False}

    def validate_task(self, task: Task) -> None:
        if task.class_weights is not None and len(task.class_weights) != task.num_outputs:
            raise ValueError(
                f"task {task.name!r}: class_weights of a multilabel task are one positive weight per label "
                f"({task.num_outputs})"
            )

    def row_loss(self, output, target, class_weights):
        target = target.to(output.dtype)
        loss = F.binary_cross_entropy_with_logits(output, target, reduction="none", pos_weight=class_weights)
        return loss.mean(-1), None

    def predict(self, output):
        return (output > 0).long()

    def metrics(self, output, target, task):
        predicted = self.predict(output)
        target = target.long()
        f1 = [M.macro_f1(predicted[:, j], target[:, j], 2) for j in range(target.shape[1])]
        areas = [a for j in range(target.shape[1]) if (a := M.auroc(output[:, j].float(), target[:, j])) is not None]
        return {
            "accuracy": M.accuracy(predicted, target),
            "macro_f1": float(sum(f1) / len(f1)),
            "auroc": float(sum(areas) / len(areas)) if areas else None,
        }

    def check_labels(self, target, mask, task):
        super().check_labels(target, mask, task)
        labelled = target[mask]
        self._raise_first(((labelled != 0) & (labelled != 1)).any(-1), mask, task, "has a label that is not 0 or 1")


@register_kind("regression", "real-valued targets; squared error; MSE, MAE, R^2")
class RegressionKind(TaskKind):
    name = "regression"
    main_metric = "mse"
    higher_is_better = {"mse": False, "mae": False, "r2": True, "loss": False}

    def row_loss(self, output, target, class_weights):
        if output.shape[-1] == 1 and target.dim() == output.dim() - 1:
            output = output.squeeze(-1)
        error = (output - target.to(output.dtype)) ** 2
        return (error.mean(-1) if error.dim() > 1 else error), None

    def predict(self, output):
        return output.squeeze(-1) if output.shape[-1] == 1 else output

    def metrics(self, output, target, task):
        predicted = self.predict(output).float()
        target = target.float().reshape(predicted.shape)
        return {
            "mse": M.mean_squared_error(predicted, target),
            "mae": M.mean_absolute_error(predicted, target),
            "r2": M.r2_score(predicted, target),
        }
