"""Tables to multi-task splits: target encoding, feature encoding fit on train, seeded splits.

Shared by the ``table``, ``adult`` and ``yeast`` loaders: every target cell that is empty
is a missing label (mask False); numeric features are standardized and categorical ones
one-hot encoded with statistics of the training split only, so no test row leaks in.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from taskloom.data.dataset import DataSplits, MultiTaskDataset
from taskloom.data.features import given_report, imbalance_notes, infer_features
from taskloom.task import Task

log = logging.getLogger(__name__)

MISSING = "<missing>"
RowName = Callable[[int], str]


def row_namer(frame: pd.DataFrame, path: str | None = None) -> RowName:
    """How an error names row ``i``: its line in the file (header is line 1), or its DataFrame index label."""
    if path is not None:
        return lambda i: f"row {i} (line {i + 2} of {path})"
    index = frame.index
    return lambda i: f"row {index[i]!r}"


def resolve_tasks(tasks: Sequence[Task] | None, defaults: Callable[[], list[Task]],
                  weight_columns: bool = True) -> list[Task]:
    """The given tasks (names unique), or the data set's defaults when ``tasks`` is None.

    ``weight_columns=False``: the data set has no columns, so a task's ``sample_weight`` is refused.
    """
    chosen = list(defaults() if tasks is None else tasks)
    if not chosen:
        raise ValueError("no tasks given; name at least one task (or pass tasks=None for the defaults)")
    seen: set[str] = set()
    for task in chosen:
        if not isinstance(task, Task):
            raise TypeError(f"tasks must be Task objects, got {type(task).__name__}")
        if task.name in seen:
            raise ValueError(f"task {task.name!r} is named twice; task names must be unique")
        seen.add(task.name)
        if task.sample_weight is not None and not weight_columns:
            raise ValueError(f"task {task.name!r}: sample_weight {task.sample_weight!r} names a column, "
                             "but this data set has no columns; use the table data set for row weights")
    return chosen


def check_columns(frame: pd.DataFrame, tasks: Sequence[Task]) -> None:
    """Refuse a task whose target or sample-weight column is not in the table, listing the columns."""
    columns = list(frame.columns)
    for task in tasks:
        for what, column in (("target", task.target), ("sample_weight", task.sample_weight)):
            if column is not None and column not in frame.columns:
                raise ValueError(
                    f"task {task.name!r}: {what} column {column!r} is not in the table; available columns: {columns}"
                )


def _missing(series: pd.Series) -> np.ndarray:
    missing = series.isna().to_numpy()
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        blank = series.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
        missing = missing | blank
    return missing


def _numbers(series: pd.Series, labelled: np.ndarray) -> np.ndarray | None:
    """The labelled cells as floats, or None if any of them is not a number."""
    values = pd.to_numeric(series.where(labelled), errors="coerce").to_numpy(dtype=float)
    if np.isnan(values[labelled]).any():
        return None
    return values


def transform_target(task: Task, series: pd.Series, labelled: np.ndarray, name_row: RowName,
                     info: dict[str, Any]) -> pd.Series:
    """The column after the task's :class:`~taskloom.task.TargetTransform`: 0/1 (threshold) or class indices (bins)."""
    transform = task.transform
    if transform is None:
        return series
    where = f"task {task.name!r} (column {task.target!r})"
    values = _numbers(series, labelled)
    if values is None:
        row = int(np.flatnonzero(labelled & np.isnan(pd.to_numeric(series, errors="coerce").to_numpy(float)))[0])
        raise ValueError(f"{where}: transform needs numbers, but {name_row(row)} holds {series.iloc[row]!r}; "
                         "fix the cell or leave it empty (a missing label)")
    if transform.threshold is not None:
        made = np.where(values > transform.threshold, 1.0, 0.0)
        described: dict[str, Any] = {"threshold": transform.threshold,
                                     "meaning": f"1 where value > {transform.threshold}"}
    else:
        edges = np.asarray(transform.bins, dtype=float)
        made = np.searchsorted(edges, values, side="right").astype(float)
        described = {"bins": list(transform.bins or ()), "meaning": "class i where bins[i-1] <= value < bins[i]"}
    info.setdefault("transforms", {})[task.name] = described
    return pd.Series(np.where(labelled, made, np.nan), index=series.index)


def encode_target(task: Task, series: pd.Series, name_row: RowName, info: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """One task's target tensor and mask from a column (after its transform); records label mappings in ``info``."""
    labelled = ~_missing(series)
    series = transform_target(task, series, labelled, name_row, info)
    where = f"task {task.name!r} (column {task.target!r})"
    mask = torch.from_numpy(labelled.copy())
    if task.kind == "regression":
        if task.num_outputs != 1:
            raise ValueError(f"{where}: a table column gives one regression output; set num_outputs to 1")
        values = _numbers(series, labelled)
        if values is None:
            row = int(np.flatnonzero(labelled & np.isnan(pd.to_numeric(series, errors="coerce").to_numpy(float)))[0])
            raise ValueError(f"{where}: {name_row(row)} holds {series.iloc[row]!r}, which is not a number")
        bad = labelled & ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{where}: {name_row(row)} holds {series.iloc[row]!r}, which is not finite")
        return torch.from_numpy(np.where(labelled, values, 0.0).astype(np.float32)), mask
    if task.kind == "binary":
        return _binary(task, series, labelled, where, name_row, info), mask
    if task.kind == "multiclass":
        return _multiclass(task, series, labelled, where, name_row, info), mask
    raise ValueError(f"{where}: a table column cannot hold a {task.kind} target; use binary, multiclass or regression")


def _binary(task: Task, series: pd.Series, labelled: np.ndarray, where: str, name_row: RowName,
            info: dict[str, Any]) -> Tensor:
    cells = series[labelled]
    if cells.map(lambda v: isinstance(v, (bool, np.bool_))).all():
        values = series.where(labelled, False).astype(bool).to_numpy()
        info.setdefault("positive_class", {})[task.name] = True
        return torch.from_numpy(values.astype(np.float32))
    numbers = _numbers(series, labelled)
    if numbers is not None and np.isin(numbers[labelled], (0.0, 1.0)).all():
        info.setdefault("positive_class", {})[task.name] = 1
        return torch.from_numpy(np.where(labelled, numbers, 0.0).astype(np.float32))
    distinct = sorted(set(cells.tolist()), key=lambda v: (str(type(v)), v))
    if len(distinct) != 2:
        third = distinct[2] if len(distinct) > 2 else distinct[0] if distinct else None
        rows = np.flatnonzero(labelled & (series == third).to_numpy()) if third is not None else []
        at = f" (first seen at {name_row(int(rows[0]))})" if len(rows) else ""
        raise ValueError(
            f"{where}: a binary target needs 0/1, booleans or exactly two distinct values; "
            f"found {len(distinct)}: {distinct[:10]}{at}"
        )
    positive = distinct[1]
    info.setdefault("positive_class", {})[task.name] = positive
    log.info("task %r: %r is the positive class (1), %r is 0", task.name, positive, distinct[0])
    return torch.from_numpy(((series == positive).to_numpy() & labelled).astype(np.float32))


def _multiclass(task: Task, series: pd.Series, labelled: np.ndarray, where: str, name_row: RowName,
                info: dict[str, Any]) -> Tensor:
    numbers = _numbers(series, labelled)
    if numbers is not None:
        values = numbers[labelled]
        bad = (values != np.round(values)) | (values < 0) | (values >= task.num_outputs)
        if bad.any():
            row = int(np.flatnonzero(labelled)[np.flatnonzero(bad)[0]])
            raise ValueError(
                f"{where}: {name_row(row)} holds {series.iloc[row]!r}, which is not a class index in "
                f"0..{task.num_outputs - 1}; raise num_outputs or fix the label"
            )
        return torch.from_numpy(np.where(labelled, numbers, 0).astype(np.int64))
    classes = sorted({str(v) for v in series[labelled]})
    if len(classes) > task.num_outputs:
        raise ValueError(
            f"{where}: {len(classes)} distinct classes {classes[:20]} for num_outputs {task.num_outputs}; "
            "raise num_outputs to the class count"
        )
    info.setdefault("class_names", {})[task.name] = classes
    lookup = {c: i for i, c in enumerate(classes)}
    codes = [lookup[str(v)] if ok else 0 for v, ok in zip(series.tolist(), labelled)]
    return torch.tensor(codes, dtype=torch.long)


def encode_weights(frame: pd.DataFrame, tasks: Sequence[Task], name_row: RowName) -> dict[str, Tensor]:
    """Per-row sample weights of tasks with a ``sample_weight`` column: finite, non-negative numbers.

    A row whose target cell is empty has no label to weigh, so its weight may be anything (kept as 0).
    """
    out: dict[str, Tensor] = {}
    for task in tasks:
        if task.sample_weight is None:
            continue
        values = pd.to_numeric(frame[task.sample_weight], errors="coerce").to_numpy(dtype=float)
        labelled = ~_missing(frame[task.target]) if task.target in frame.columns else np.ones(len(frame), dtype=bool)
        values = np.where(labelled, values, 0.0)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"task {task.name!r}: sample weight column {task.sample_weight!r} at {name_row(row)} holds "
                f"{frame[task.sample_weight].iloc[row]!r}; weights must be finite non-negative numbers"
            )
        out[task.name] = torch.from_numpy(values.astype(np.float32))
    return out


@dataclass
class FeatureEncoder:
    """Standardize numeric columns and one-hot encode categorical ones, with statistics of one split.

    Missing categoricals get their own category; unseen categories encode as all zeros.
    Missing numeric cells are an error unless ``impute="mean"`` (the training mean).
    """

    numeric: list[str]
    categorical: list[str]
    impute: str | None = None
    means: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.impute not in (None, "mean"):
            raise ValueError(f"impute must be None or 'mean', got {self.impute!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fitted encoder as plain JSON data (no pickle): what a saved model needs to encode new rows."""
        return {"numeric": list(self.numeric), "categorical": list(self.categorical), "impute": self.impute,
                "means": dict(self.means), "scales": dict(self.scales),
                "categories": {c: list(v) for c, v in self.categories.items()},
                "missing_category": MISSING, "unseen_category": "all zeros"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureEncoder":
        """The encoder :meth:`to_dict` described; refuses a description that lacks a column's statistics."""
        encoder = cls(list(data["numeric"]), list(data["categorical"]), data.get("impute"),
                      {c: float(v) for c, v in data["means"].items()}, {c: float(v) for c, v in data["scales"].items()},
                      {c: [str(x) for x in v] for c, v in data["categories"].items()})
        lacking = [c for c in encoder.numeric if c not in encoder.means or c not in encoder.scales]
        lacking += [c for c in encoder.categorical if c not in encoder.categories]
        if lacking:
            raise ValueError(f"the saved feature encoder has no statistics for columns {lacking}; "
                             "the model directory is damaged: retrain or restore its model.json")
        return encoder

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric)
        for column in self.categorical:
            names += [f"{column}={value}" for value in self.categories[column]]
        return names

    def fit(self, frame: pd.DataFrame) -> "FeatureEncoder":
        for column in self.numeric:
            values = frame[column].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            mean = float(finite.mean()) if len(finite) else 0.0
            std = float(finite.std()) if len(finite) else 1.0
            self.means[column] = mean
            self.scales[column] = std if std > 0 else 1.0
        for column in self.categorical:
            cells = _category_strings(frame[column])
            self.categories[column] = sorted(set(cells))
        return self

    def transform(self, frame: pd.DataFrame, name_row: RowName) -> np.ndarray:
        """The encoded float32 matrix; ``name_row`` maps a row position of ``frame`` to its name in errors."""
        blocks = []
        for column in self.numeric:
            values = frame[column].to_numpy(dtype=float)
            missing = np.isnan(values)
            if missing.any() and self.impute != "mean":
                row = int(np.flatnonzero(missing)[0])
                raise ValueError(
                    f"feature column {column!r}: {name_row(row)} is empty; fill it, drop the row, "
                    "or pass the option impute='mean'"
                )
            values = np.where(missing, self.means[column], values)
            blocks.append(((values - self.means[column]) / self.scales[column])[:, None])
        for column in self.categorical:
            cells = _category_strings(frame[column])
            lookup = {c: i for i, c in enumerate(self.categories[column])}
            codes = np.array([lookup.get(c, -1) for c in cells], dtype=np.int64)
            onehot = np.zeros((len(frame), len(lookup)))
            rows = np.flatnonzero(codes >= 0)
            onehot[rows, codes[rows]] = 1.0
            blocks.append(onehot)
        if not blocks:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)


def _category_strings(series: pd.Series) -> list[str]:
    missing = _missing(series)
    return [MISSING if gone else str(v).strip() for v, gone in zip(series.tolist(), missing)]


def check_finite_numeric(frame: pd.DataFrame, numeric: Sequence[str], name_row: RowName,
                         coerced: Sequence[str] = ()) -> None:
    """Refuse infinite or non-numeric cells in numeric feature columns, naming the column and row.

    Columns in ``coerced`` may hold text: those cells count as missing (``coerce_numeric``).
    """
    for column in numeric:
        series = frame[column]
        if series.dtype == bool:
            continue
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
        unparsable = np.isnan(values) & ~_missing(series) & (column not in set(coerced))
        infinite = np.isinf(values)
        for bad, what in ((unparsable, "is not a number"), (infinite, "is not finite")):
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"feature column {column!r}: {name_row(row)} holds {series.iloc[row]!r}, which {what}; "
                    "fix or drop that row"
                )


def choose_features(frame: pd.DataFrame, tasks: Sequence[Task], features: Sequence[str] | None,
                    categorical: Sequence[str] | None, exclude: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Numeric and categorical feature columns (see :func:`taskloom.data.features.infer_features`)."""
    choice = infer_features(frame, tasks, features, categorical, exclude)
    return choice.numeric, choice.categorical


def frame_splits(
    frame: pd.DataFrame,
    tasks: Sequence[Task],
    parts: Mapping[str, np.ndarray | Tensor],
    targets: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    numeric: Sequence[str],
    categorical: Sequence[str],
    name_row: RowName,
    weights: Mapping[str, Tensor] | None = None,
    impute: str | None = None,
    info: dict[str, Any] | None = None,
    feature_report: list[dict[str, str]] | None = None,
    coerced: Sequence[str] = (),
) -> DataSplits:
    """Encode features (fit on ``parts['train']``) and cut rows into train/val/test :class:`DataSplits`.

    ``info["feature_report"]`` lists each column's role ({"column", "type", "reason"}); ``info["notes"]``
    holds notes such as a rare positive class.
    """
    check_finite_numeric(frame, numeric, name_row, coerced)
    numeric_frame = frame[list(numeric)].apply(pd.to_numeric, errors="coerce").astype(float)
    encoded = pd.concat([numeric_frame, frame[list(categorical)]], axis=1)
    train_rows = np.asarray(parts["train"])
    encoder = FeatureEncoder(list(numeric), list(categorical), impute).fit(encoded.iloc[train_rows])
    inputs = torch.from_numpy(encoder.transform(encoded, name_row))
    full = MultiTaskDataset(inputs, dict(targets), dict(masks), dict(weights or {}))
    splits = {name: full.subset(torch.as_tensor(np.asarray(rows), dtype=torch.long)) for name, rows in parts.items()}
    for split in splits.values():
        split.apply_conditions(tasks)
    details = dict(info or {})
    details.update(
        feature_names=encoder.feature_names,
        numeric_features=list(numeric),
        categorical_features=list(categorical),
        sizes={name: len(split) for name, split in splits.items()},
        rows={name: np.asarray(rows) for name, rows in parts.items()},
        standardization={c: (encoder.means[c], encoder.scales[c]) for c in numeric},
        feature_report=feature_report if feature_report is not None
        else given_report(numeric, categorical, "feature column of the data set"),
        notes=list(details.get("notes", [])) + imbalance_notes(tasks, splits["train"].targets,
                                                               splits["train"].masks, np.arange(len(splits["train"]))),
        preprocessing=encoder.to_dict(),
    )
    result = DataSplits(splits["train"], splits["val"], splits["test"], list(tasks), (inputs.shape[1],), details)
    result.validate()
    return result
