"""Which columns of a table become features, and as what: numeric, categorical, or dropped (and why).

Without an explicit ``features`` list every column that is no target, weight or excluded column is
a candidate. Rules, in order: a constant column is dropped with a note; a date-like column and an
identifier (every cell distinct, strings or whole numbers, at least ``IDENTIFIER_MIN_ROWS`` rows)
are refused unless listed in ``features``; a text column whose non-empty cells are mostly numbers
(at least ``MOSTLY_NUMERIC`` of them) but not all is refused, naming the stray cells, unless listed in
``coerce_numeric`` (those cells then count as missing); other text columns are categorical; whole-
number columns with at most ``FEW_VALUES`` distinct values stay numeric with a hint. The choices are
logged on ``taskloom.data.report`` (the CLI shows it) and returned as JSON-able rows.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from taskloom.task import Task

report_log = logging.getLogger("taskloom.data.report")

MOSTLY_NUMERIC = 0.9
IDENTIFIER_MIN_ROWS = 20
FEW_VALUES = 10
STRAY_SHOWN = 5
DATE_PATTERN = re.compile(
    r"^\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:?\d{2}|Z)?)?"
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}( \d{1,2}:\d{2}(:\d{2})?)?)\s*$"
)
RowName = Callable[[int], str]


@dataclass
class FeatureChoice:
    """Numeric and categorical feature columns, numeric columns whose stray text becomes missing, and the report."""

    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    coerced: list[str] = field(default_factory=list)
    report: list[dict[str, str]] = field(default_factory=list)

    def add(self, column: str, kind: str, reason: str) -> None:
        self.report.append({"column": str(column), "type": kind, "reason": reason})
        if kind == "numeric":
            self.numeric.append(column)
        elif kind == "categorical":
            self.categorical.append(column)


def _blank(series: pd.Series) -> np.ndarray:
    missing = series.isna().to_numpy()
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        missing = missing | series.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
    return missing


def _is_text(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
                or pd.api.types.is_datetime64_any_dtype(series))


def _whole_numbers(series: pd.Series, present: np.ndarray) -> bool:
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return False
    values = series.to_numpy(dtype=float)[present]
    return bool(len(values)) and bool(np.all(np.isfinite(values) & (values == np.round(values))))


def is_date_like(series: pd.Series) -> bool:
    """A datetime column, or a text column whose every non-empty cell reads as a date (2024-05-01, 01/05/2024, ...)."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return True
    if not _is_text(series):
        return False
    cells = series[~_blank(series)]
    return len(cells) > 0 and bool(cells.map(lambda v: isinstance(v, str) and bool(DATE_PATTERN.match(v))).all())


def is_identifier(series: pd.Series) -> bool:
    """Every non-empty cell distinct, the cells text or whole numbers, on at least ``IDENTIFIER_MIN_ROWS`` rows."""
    present = ~_blank(series)
    cells = series[present]
    if len(cells) < IDENTIFIER_MIN_ROWS or cells.nunique() != len(cells):
        return False
    return _is_text(series) or _whole_numbers(series, present)


def stray_cells(series: pd.Series) -> tuple[np.ndarray, float]:
    """Rows of a text column's non-empty cells that are not numbers, and the share of non-empty cells that are."""
    present = ~_blank(series)
    parsed = pd.to_numeric(series.where(present), errors="coerce").to_numpy(dtype=float)
    stray = present & np.isnan(parsed)
    share = 1.0 - stray.sum() / max(int(present.sum()), 1)
    return np.flatnonzero(stray), float(share)


def infer_features(
    frame: pd.DataFrame,
    tasks: Sequence[Task],
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    coerce_numeric: Sequence[str] = (),
    name_row: RowName | None = None,
    source: str = "the table",
) -> FeatureChoice:
    """Choose and type the feature columns of ``frame`` (rules in the module docstring); errors name the column."""
    name_row = name_row or (lambda i: f"row {frame.index[i]!r}")
    columns = list(frame.columns)
    for option, names in (("features", features), ("categorical", categorical), ("exclude", exclude),
                          ("coerce_numeric", coerce_numeric)):
        unknown = [c for c in names or () if c not in frame.columns]
        if unknown:
            raise ValueError(f"{option} {unknown} are not in {source}; available columns: {columns}")
    roles: dict[str, str] = {}
    for task in tasks:
        roles.setdefault(str(task.target), f"target of task {task.name!r}")
        if task.sample_weight:
            roles.setdefault(task.sample_weight, f"sample weights of task {task.name!r}")
    targets = sorted(c for c in features or () if c in {t.target for t in tasks})
    if targets:
        raise ValueError(f"features {targets} are also task targets; a label cannot be an input")
    listed = set(categorical or ())
    explicit = features is not None
    choice = FeatureChoice()
    if explicit:
        stray = sorted(listed - set(features or ()))
        if stray:
            raise ValueError(f"categorical columns {stray} are not among the features {list(features or ())}")
        candidates = list(features or ())
        for column in columns:
            if column not in candidates:
                choice.add(column, "dropped", roles.get(column, "not listed in features"))
    else:
        candidates = []
        for column in columns:
            if column in roles:
                choice.add(column, "dropped", roles[column])
            elif column in exclude:
                choice.add(column, "dropped", "listed in exclude")
            else:
                candidates.append(column)
    for column in candidates:
        _choose(frame[column], column, choice, explicit, column in listed, column in coerce_numeric, name_row, source)
    if not choice.numeric and not choice.categorical:
        raise ValueError(f"no feature columns left in {source}; name them with the option features=[...]")
    position = {str(c): i for i, c in enumerate(columns)}
    choice.report.sort(key=lambda row: position.get(row["column"], len(position)))
    log_report(choice, source)
    return choice


def _choose(series: pd.Series, column: str, choice: FeatureChoice, explicit: bool, categorical: bool,
            coerce: bool, name_row: RowName, source: str) -> None:
    present = ~_blank(series)
    if series.astype(str).where(present, "\0missing").nunique() <= 1:
        first = series[present].iloc[0] if present.any() else None
        value = "empty" if first is None else repr(first.item() if isinstance(first, np.generic) else first)
        choice.add(column, "dropped", f"constant: every row holds {value}")
        return
    if categorical:
        choice.add(column, "categorical", "listed in categorical")
        return
    how = "To use it, list it in features with the other feature columns (or leave it out "
    if is_date_like(series):
        if not explicit:
            raise ValueError(f"column {column!r} of {source} looks like a date; dates are not used as features "
                             f"by default. {how}with exclude=[{column!r}]); a listed date is one-hot encoded")
        choice.add(column, "categorical", "date-like, used because listed in features (one-hot encoded)")
        return
    if _is_text(series):
        rows, share = stray_cells(series)
        if len(rows) == 0:
            choice.add(column, "numeric", "text cells that all read as numbers")
            return
        if share >= MOSTLY_NUMERIC and coerce:
            choice.coerced.append(column)
            choice.add(column, "numeric", f"{len(rows)} cell(s) that are not numbers count as missing (coerce_numeric)")
            return
        if share >= MOSTLY_NUMERIC:
            shown = "; ".join(f"{name_row(int(r))}: {series.iloc[int(r)]!r}" for r in rows[:STRAY_SHOWN])
            more = f" and {len(rows) - STRAY_SHOWN} more" if len(rows) > STRAY_SHOWN else ""
            raise ValueError(
                f"feature column {column!r} of {source} is numeric except for {len(rows)} "
                f"cell{'s' if len(rows) > 1 else ''}: {shown}{more}. "
                f"Fix those cells, or list the column in coerce_numeric to treat them as missing (with "
                f"impute='mean' to fill them), or in categorical if its values are categories"
            )
    if is_identifier(series):
        if not explicit:
            raise ValueError(f"column {column!r} of {source} is unique on every row, like an identifier; "
                             f"identifiers are not used as features by default. {how}with exclude=[{column!r}])")
        kind = "categorical" if _is_text(series) else "numeric"
        choice.add(column, kind, "unique on every row (an identifier?), used because listed in features")
        return
    if _is_text(series):
        choice.add(column, "categorical", "text")
        return
    if _whole_numbers(series, present):
        distinct = int(series[present].nunique())
        if 2 < distinct <= FEW_VALUES:
            choice.add(column, "numeric", f"whole numbers with only {distinct} distinct values; if they are codes "
                                          "of categories, list the column in categorical")
            return
    choice.add(column, "numeric", "numbers" if not pd.api.types.is_bool_dtype(series) else "booleans (0/1)")


def log_report(choice: FeatureChoice, source: str) -> None:
    """One line with the feature columns by type, then one note per dropped column or hint."""
    numeric = ", ".join(choice.numeric) or "none"
    categorical = ", ".join(choice.categorical) or "none"
    report_log.info("features of %s: numeric (%d): %s; categorical (%d): %s", source, len(choice.numeric), numeric,
                    len(choice.categorical), categorical)
    for row in choice.report:
        if row["type"] == "dropped" and not row["reason"].startswith(("target of", "sample weights of")):
            report_log.info("note: column %r dropped: %s", row["column"], row["reason"])
        elif "distinct values" in row["reason"] or "coerce_numeric" in row["reason"]:
            report_log.info("note: column %r is %s: %s", row["column"], row["type"], row["reason"])


def given_report(numeric: Sequence[str], categorical: Sequence[str], reason: str) -> list[dict[str, str]]:
    """Report rows for feature columns a data set fixes itself (no inference)."""
    return ([{"column": c, "type": "numeric", "reason": reason} for c in numeric]
            + [{"column": c, "type": "categorical", "reason": reason} for c in categorical])


def imbalance_notes(tasks: Sequence[Task], targets: dict[str, Any], masks: dict[str, Any],
                    train_rows: np.ndarray, threshold: float = 0.1) -> list[str]:
    """A note per binary task with under ``threshold`` positive labelled training rows, suggesting class_weights."""
    notes = []
    for task in tasks:
        if task.kind != "binary" or task.class_weights is not None:
            continue
        labelled = masks[task.name].numpy()[train_rows]
        values = targets[task.name].numpy()[train_rows][labelled]
        if len(values) == 0:
            continue
        positives = int((values == 1).sum())
        rate = positives / len(values)
        if rate < threshold:
            ratio = (len(values) - positives) / max(positives, 1)
            notes.append(
                f"task {task.name!r}: {rate:.1%} of its labelled training rows are positive ({positives} of "
                f"{len(values)}); consider class_weights: [1, {ratio:.3g}] (weights of 0 and 1) in the task config"
            )
    for note in notes:
        report_log.info("note: %s", note)
    return notes


__all__ = ["FeatureChoice", "given_report", "imbalance_notes", "infer_features", "is_date_like", "is_identifier",
           "stray_cells"]
