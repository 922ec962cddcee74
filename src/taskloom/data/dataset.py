"""In-memory multi-task data: inputs, and per task a target, a mask of labelled rows and row weights."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from taskloom.data.batch import Batch
from taskloom.task import LabelError, Task

log = logging.getLogger(__name__)


def take(value: Any, index: Tensor) -> Any:
    """Rows ``index`` of a tensor or of every tensor in a dict."""
    if isinstance(value, dict):
        return {k: v[index] for k, v in value.items()}
    return value[index]


def row_count(inputs: Any) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


@dataclass
class MultiTaskDataset:
    """Rows of inputs with name-keyed targets, masks (True = labelled) and optional sample weights.

    Targets of unlabelled rows hold a placeholder (0); only the mask says whether a
    label exists. Every task has a mask; a batch whose rows are all labelled for a task
    carries no mask for it (the fast path), decided from the masks as they are when the
    batch is cut, so a mask changed after construction always counts.
    """

    inputs: Any
    targets: dict[str, Tensor]
    masks: dict[str, Tensor] = field(default_factory=dict)
    weights: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self)
        for name, target in self.targets.items():
            if len(target) != n:
                raise ValueError(f"task {name!r}: {len(target)} targets for {n} rows")
            mask = self.masks.get(name)
            if mask is None:
                self.masks[name] = torch.ones(n, dtype=torch.bool)
            elif mask.dtype != torch.bool or mask.shape[0] != n:
                raise ValueError(f"task {name!r}: the mask must be a bool tensor with {n} rows")
        for name, weight in self.weights.items():
            if name not in self.targets:
                raise ValueError(f"sample weights given for {name!r}, which has no targets")
            if weight.shape != (n,):
                raise ValueError(f"task {name!r}: sample weights must have shape ({n},)")

    def __len__(self) -> int:
        return row_count(self.inputs)

    @property
    def task_names(self) -> list[str]:
        return list(self.targets)

    def labelled(self, name: str) -> int:
        """Number of rows labelled for task ``name``."""
        return int(self.masks[name].sum())

    def subset(self, index: Tensor | Sequence[int] | np.ndarray) -> "MultiTaskDataset":
        index = torch.as_tensor(index, dtype=torch.long)
        return MultiTaskDataset(
            take(self.inputs, index),
            take(self.targets, index),
            take(self.masks, index),
            take(self.weights, index),
        )

    def batch(self, index: Tensor) -> Batch:
        """The rows ``index`` as a :class:`Batch`; a task labelled on all of them is sent without a mask."""
        masks = {n: m[index] for n, m in self.masks.items()}
        if masks:
            complete = torch.stack([m.all() for m in masks.values()]).tolist()
            masks = {n: m for (n, m), full in zip(masks.items(), complete) if not full}
        return Batch(take(self.inputs, index), take(self.targets, index), masks, take(self.weights, index))

    def apply_conditions(self, tasks: Sequence[Task]) -> None:
        """Unlabel each conditional task's rows where its condition task lacks the required label."""
        for task in tasks:
            cond = task.only_where
            if cond is None:
                continue
            if cond.task not in self.targets:
                raise ValueError(f"task {task.name!r}: only_where.task {cond.task!r} is not a task of this data")
            holds = self.masks[cond.task] & (self.targets[cond.task].double() == float(cond.equals))
            self.masks[task.name] = self.masks[task.name] & holds

    def validate(self, tasks: Sequence[Task], split: str = "train", rows: Sequence[int] | None = None) -> None:
        """Refuse non-finite inputs, invalid labels and a training split without labels for a task.

        Messages name the split, task, column and row; ``rows`` (this split's row -> row of the
        whole data set, as in ``DataSplits.info["rows"]``) adds the original row. A task without
        labelled rows in a validation or test split is only logged: evaluation reports it as such.
        """
        if len(self) == 0:
            raise ValueError(f"the {split} split is empty; use a smaller validation/test fraction or more data")

        def origin(row: int) -> str:
            return "" if rows is None or row >= len(rows) else f" (row {int(rows[row])} of the whole data set)"

        named = self.inputs.items() if isinstance(self.inputs, dict) else [(None, self.inputs)]
        for key, value in named:
            if not (isinstance(value, Tensor) and value.is_floating_point()):
                continue
            bad = ~torch.isfinite(value.reshape(len(value), -1))
            if bool(bad.any()):
                row, column = (int(i) for i in torch.nonzero(bad)[0])
                what = "input feature" if key is None else f"input {key!r} feature"
                raise ValueError(
                    f"{split} split: {what} {column} of row {row}{origin(row)} is not finite; "
                    "impute or drop it before training"
                )
        for task in tasks:
            if task.name not in self.targets:
                raise ValueError(f"task {task.name!r} has no targets in the {split} split")
            mask = self.masks[task.name]
            if not bool(mask.any()):
                message = f"task {task.name!r} (target {task.target!r}) has no labelled rows in the {split} split"
                if split == "train":
                    raise ValueError(f"{message}; label some of its rows or leave the task out")
                log.warning("%s; it is reported there as 'no labelled rows'", message)
                continue
            try:
                target = self.targets[task.name]  # checked on the task's loss units (tokens, for tagging)
                task.kind_spec.check_labels(target, task.kind_spec.unit_mask(mask, target, self.inputs), task)
            except LabelError as error:
                raise error.located(split, rows) from None
            except ValueError as error:
                raise ValueError(f"{split} split, {error}") from None


class BatchLoader:
    """Batches of a :class:`MultiTaskDataset` by tensor indexing (no per-row collation).

    The order of epoch ``e`` depends only on ``seed`` and ``e``, so a resumed run sees
    the same batches as an uninterrupted one.
    """

    def __init__(
        self,
        dataset: MultiTaskDataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        for i in range(len(self)):
            yield self.dataset.batch(order[i * self.batch_size : (i + 1) * self.batch_size])


@dataclass
class DataSplits:
    """Train, validation and test splits with the tasks they are labelled for."""

    train: MultiTaskDataset
    val: MultiTaskDataset
    test: MultiTaskDataset
    tasks: list[Task]
    input_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def in_features(self) -> int:
        return int(np.prod(self.input_shape))

    def validate(self) -> None:
        """Check every split (see :meth:`MultiTaskDataset.validate`), naming original rows when ``info`` has them."""
        rows = self.info.get("rows") or {}
        for name in ("train", "val", "test"):
            getattr(self, name).validate(self.tasks, name, rows.get(name))


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """A seeded random partition of ``range(n)`` into train, validation and test indices (not stratified).

    Loaders with per-row labels stratify instead (:func:`taskloom.data.stratify.split_for_tasks`).
    """
    from taskloom.data.stratify import split_sizes

    _, n_val, n_test = split_sizes(n, val_fraction, test_fraction)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]
