"""Any CSV or Parquet table (or pandas DataFrame) as a multi-task data set: one task per target column.

Empty target cells are missing labels; numeric features are standardized and categorical
ones one-hot encoded on the training split only (see :mod:`taskloom.data.table`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from taskloom.data.dataset import DataSplits, split_indices
from taskloom.data.datasets import DATASETS
from taskloom.data.table import (
    check_columns,
    choose_features,
    encode_target,
    encode_weights,
    frame_splits,
    resolve_tasks,
    row_namer,
)
from taskloom.task import Task


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (by suffix: .parquet/.pq, else CSV)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table file {str(path)!r} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _no_default_tasks() -> list[Task]:
    raise ValueError("the table data set has no default tasks; give tasks, each with a target column")


@DATASETS.register("table", "any CSV or Parquet table: one task per target column, missing cells masked")
def load_table(
    tasks: Sequence[Task] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    path: str | Path | None = None,
    frame: pd.DataFrame | None = None,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    impute: str | None = None,
) -> DataSplits:
    """Load a table from ``path`` (CSV/Parquet) or an in-memory ``frame`` into seeded train/val/test splits.

    ``features`` defaults to every column that is not a target or weight column;
    ``categorical`` to the non-numeric features; ``impute="mean"`` fills empty numeric cells.
    """
    if (path is None) == (frame is None):
        raise ValueError("the table data set needs exactly one of the options path=... or frame=...")
    chosen = resolve_tasks(tasks, _no_default_tasks)
    source = str(path) if path is not None else "DataFrame"
    if frame is None:
        frame = read_table(path)
    name_row = row_namer(frame, str(path) if path is not None else None)
    check_columns(frame, chosen)
    numeric, categorical_columns = choose_features(frame, chosen, features, categorical)
    info: dict[str, Any] = {"source": source}
    targets, masks = {}, {}
    for task in chosen:
        targets[task.name], masks[task.name] = encode_target(task, frame[task.target], name_row, info)
    weights = encode_weights(frame, chosen, name_row)
    train, val, test = split_indices(len(frame), val_fraction, test_fraction, seed)
    parts = {"train": train.numpy(), "val": val.numpy(), "test": test.numpy()}
    return frame_splits(frame, chosen, parts, targets, masks, numeric, categorical_columns, name_row,
                        weights=weights, impute=impute, info=info)


__all__ = ["load_table", "read_table"]
