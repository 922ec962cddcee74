"""Any CSV or Parquet table (or pandas DataFrame) as a multi-task data set: one task per target column.

Empty target cells are missing labels; numeric features are standardized and categorical
ones one-hot encoded on the training split only (see :mod:`taskloom.data.table`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from taskloom.data.dataset import DataSplits
from taskloom.data.datasets import DATASETS
from taskloom.data.features import infer_features
from taskloom.data.hash_split import hash_split_rows
from taskloom.data.stratify import split_for_tasks, split_sizes
from taskloom.data.table import (
    check_columns,
    encode_target,
    encode_weights,
    frame_splits,
    resolve_tasks,
    row_namer,
)
from taskloom.task import Task


def read_table(path: str | Path, nrows: int | None = None) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (by suffix: .parquet/.pq, else UTF-8 CSV); errors name the file.

    ``nrows=0`` reads only the header (the column names).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table file {str(path)!r} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several types for a file that is not Parquet
            raise ValueError(f"table file {str(path)!r} is not a readable Parquet file ({error}); "
                             "write it again with DataFrame.to_parquet, or save it as a CSV file") from None
        return frame if nrows is None else frame.head(nrows)
    with path.open("rb") as handle:
        if b"\0" in handle.read(8192):
            raise ValueError(f"table file {str(path)!r} is a binary file, not a UTF-8 text CSV: is it a spreadsheet "
                             "or a compressed file? Save it as a UTF-8 CSV, or as Parquet with the suffix .parquet")
    try:
        return pd.read_csv(path, nrows=nrows)
    except pd.errors.EmptyDataError:
        raise ValueError(f"table file {str(path)!r} is empty: it has no header line; write the column names "
                         "on its first line and one row per line below") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"table file {str(path)!r} is not UTF-8 text (byte {error.start} cannot be decoded): is it "
                         "in another encoding (Latin-1, Windows-1252) or a spreadsheet? Save it as a UTF-8 CSV, "
                         "or as Parquet with the suffix "
                         ".parquet") from None
    except pd.errors.ParserError as error:
        raise ValueError(f"table file {str(path)!r} is not a well-formed CSV: {error}") from None


def table_columns(path: str | Path) -> list[str]:
    """The column names of a CSV or Parquet file, read without its rows; errors name the file."""
    return [str(c) for c in read_table(path, nrows=0).columns]


def check_row_count(n: int, val_fraction: float, test_fraction: float, source: str) -> None:
    """Refuse a table too small for a non-empty train, validation and test split, naming it and the need."""
    for field, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if fraction == 0:
            raise ValueError(f"data.{field} is 0, but a run needs a validation and a test split; set it above 0 "
                             "(e.g. 0.1)")
    train, val, test = split_sizes(n, val_fraction, test_fraction)
    if min(train, val, test) >= 1:
        return
    need = next(m for m in range(1, 10_000) if min(split_sizes(m, val_fraction, test_fraction)) >= 1)
    raise ValueError(
        f"{source} has {n} data row{'s' if n != 1 else ''}; a train, validation and test split (val_fraction "
        f"{val_fraction}, test_fraction {test_fraction}) needs at least {need}: "
        "add rows, or check that the file holds the rows you meant"
    )


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
    exclude: Sequence[str] = (),
    coerce_numeric: Sequence[str] = (),
    stratify: bool = True,
    split_key: str | None = None,
) -> DataSplits:
    """Load a table from ``path`` (CSV/Parquet) or an in-memory ``frame`` into seeded train/val/test splits.

    Splits are stratified on every task's labels (:mod:`taskloom.data.stratify`) unless ``stratify`` is
    False. Feature columns are chosen and typed as :mod:`taskloom.data.features` describes; the choice
    is logged and kept in ``info["feature_report"]``.

    Options:
        path: the CSV or Parquet (.parquet, .pq) file; empty cells of a target column are missing labels
        frame: a pandas DataFrame instead of a file (Python API only)
        features: the feature columns; default every column that is no target, weight or excluded column
            (then constant columns are dropped, identifiers and dates refused)
        categorical: columns to one-hot encode; default the text columns among the features
        impute: "mean" fills empty numeric feature cells with the training mean; default: refuse them
        exclude: columns never used as features (identifiers, dates, sensitive columns)
        coerce_numeric: numeric columns whose few non-number cells count as missing instead of an error
        stratify: keep each task's label shares in every split (iterative stratification); False: random rows
        split_key: a column whose hash decides each row's split (:mod:`taskloom.data.hash_split`, not
            stratified; the column is no feature unless listed in features)
    """
    if (path is None) == (frame is None):
        raise ValueError("the table data set needs exactly one of the options path=... or frame=...")
    chosen = resolve_tasks(tasks, _no_default_tasks)
    source = f"table file {str(path)!r}" if path is not None else "the table"
    if frame is None:
        frame = read_table(path)
    check_row_count(len(frame), val_fraction, test_fraction, source)
    name_row = row_namer(frame, str(path) if path is not None else None)
    check_columns(frame, chosen)
    if split_key is not None and split_key not in frame.columns:
        raise ValueError(f"data.split.key: column {split_key!r} is not in {source}; its columns are "
                         f"{list(frame.columns)}")
    if split_key is not None and features is None:
        exclude = [*exclude, split_key]
    choice = infer_features(frame, chosen, features, categorical, exclude, coerce_numeric, name_row, source)
    info: dict[str, Any] = {"source": str(path) if path is not None else "DataFrame"}
    targets, masks = {}, {}
    for task in chosen:
        targets[task.name], masks[task.name] = encode_target(task, frame[task.target], name_row, info)
    weights = encode_weights(frame, chosen, name_row)
    if split_key is None:
        train, val, test = split_for_tasks(chosen, targets, masks, val_fraction, test_fraction, seed, stratify)
        parts = {"train": train.numpy(), "val": val.numpy(), "test": test.numpy()}
    else:
        parts = hash_split_rows(frame[split_key], len(frame), val_fraction, test_fraction, seed,
                                f"data.split.key column {split_key!r} of {source}")
        info["split"] = {"kind": "hash", "key": split_key, "seed": seed}
    info["stratified"] = stratify and split_key is None
    return frame_splits(frame, chosen, parts, targets, masks, choice.numeric, choice.categorical, name_row,
                        weights=weights, impute=impute, info=info, feature_report=choice.report,
                        coerced=choice.coerced)


__all__ = ["check_row_count", "load_table", "read_table", "table_columns"]
