"""New raw rows to the model's input matrix, with the preprocessing saved at training time.

The arithmetic is that of :class:`taskloom.data.table.FeatureEncoder` (standardize in float64,
one-hot, then float32), so a row scored here gets the input it got in training. Every refusal
is an :class:`InputError` naming the column and row, so the CLI and the server can say what to fix.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from taskloom.data.table import MISSING, FeatureEncoder

UNKNOWN_POLICIES = ("zeros", "error")


class InputError(ValueError):
    """A row the model cannot score: ``field`` is the column (or request field), ``row`` its position."""

    def __init__(self, message: str, field: str | None = None, row: int | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.row = message, field, row

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "field": self.field, "row": self.row}


def default_row_name(i: int) -> str:
    return f"row {i}"


def _is_missing(cell: Any) -> bool:
    """None, NaN, pandas' NA / NaT, or blank text: an empty cell."""
    if isinstance(cell, str):
        return not cell.strip()
    if cell is None or isinstance(cell, (list, dict, tuple)):
        return cell is None
    return bool(pd.isna(cell))


def _with_number_aliases(categories: Sequence[str]) -> dict[str, int]:
    """Category -> one-hot position, plus ``3`` for a category ``3.0`` and back: a column of whole numbers
    reads as floats when it has an empty cell, so a chunk of a file may spell a category either way."""
    lookup = {value: i for i, value in enumerate(categories)}
    for value, i in list(lookup.items()):
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number) and number.is_integer():
            for alias in (str(int(number)), str(float(number))):
                lookup.setdefault(alias, i)
    return lookup


def _as_column(cells: Any, n: int) -> np.ndarray:
    """One column as a 1-D array; cells that are lists or objects stay single cells (to be refused by name)."""
    if isinstance(cells, np.ndarray) and cells.ndim == 1:
        return cells
    column = np.empty(n, dtype=object)
    for i, cell in enumerate(cells):
        column[i] = cell
    return column


class RowEncoder:
    """Encode columns of new rows (a DataFrame, or JSON records) exactly as the training split was encoded.

    ``unknown="zeros"`` encodes a category never seen in training as all zeros (what training did to
    validation and test rows); ``unknown="error"`` refuses it, naming the column, row and known values.
    """

    def __init__(self, encoder: FeatureEncoder, unknown: str = "zeros") -> None:
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown categories: choose one of {UNKNOWN_POLICIES}, got {unknown!r}")
        self.encoder = encoder
        self.unknown = unknown
        self.lookups = {c: _with_number_aliases(encoder.categories[c]) for c in encoder.categorical}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], unknown: str = "zeros") -> "RowEncoder":
        return cls(FeatureEncoder.from_dict(data), unknown)

    @property
    def columns(self) -> list[str]:
        """The feature columns a row must carry, numeric first."""
        return list(self.encoder.numeric) + list(self.encoder.categorical)

    @property
    def width(self) -> int:
        return len(self.encoder.feature_names)

    def column_types(self) -> dict[str, Any]:
        """Each expected column: numeric (with its training mean and scale) or categorical (with its values)."""
        out: dict[str, Any] = {}
        for c in self.encoder.numeric:
            out[c] = {"type": "number", "mean": self.encoder.means[c], "scale": self.encoder.scales[c],
                      "empty": "training mean" if self.encoder.impute == "mean" else "refused"}
        for c in self.encoder.categorical:
            out[c] = {"type": "category", "values": list(self.encoder.categories[c]),
                      "unseen": "all zeros" if self.unknown == "zeros" else "refused"}
        return out

    def check_columns(self, present: Sequence[str]) -> None:
        """Refuse inputs lacking a feature column, naming every missing one."""
        have = set(present)
        lacking = [c for c in self.columns if c not in have]
        if lacking:
            raise InputError(f"missing feature column(s) {lacking}; the model needs {self.columns}",
                             field=lacking[0])

    def encode_records(self, records: Sequence[Mapping[str, Any]], name_row: Callable[[int], str] = default_row_name,
                       first_row: int = 0) -> np.ndarray:
        """JSON-like records (one mapping per row) to the float32 input matrix."""
        for i, record in enumerate(records):
            lacking = [c for c in self.columns if c not in record]
            if lacking:
                raise InputError(f"{name_row(i)}: missing field(s) {lacking}; every row needs {self.columns}",
                                 field=lacking[0], row=first_row + i)
        columns = {c: [record[c] for record in records] for c in self.columns}
        return self.encode_columns(columns, len(records), name_row, first_row)

    def encode_frame(self, frame: Any, name_row: Callable[[int], str] = default_row_name,
                     first_row: int = 0) -> np.ndarray:
        """A pandas DataFrame's feature columns to the float32 input matrix (other columns are ignored)."""
        self.check_columns(list(frame.columns))
        columns = {c: frame[c].to_numpy() for c in self.columns}
        return self.encode_columns(columns, len(frame), name_row, first_row)

    def encode_columns(self, columns: Mapping[str, Any], n: int, name_row: Callable[[int], str] = default_row_name,
                       first_row: int = 0) -> np.ndarray:
        blocks = [self._numeric(c, columns[c], n, name_row, first_row)[:, None] for c in self.encoder.numeric]
        blocks += [self._categorical(c, columns[c], n, name_row, first_row) for c in self.encoder.categorical]
        if not blocks:
            return np.zeros((n, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def _numeric(self, column: str, cells: Any, n: int, name_row: Callable[[int], str], first: int) -> np.ndarray:
        array = _as_column(cells, n)
        if array.dtype.kind in "fiub":
            values = array.astype(np.float64)
        else:
            values = np.empty(n, dtype=np.float64)
            for i, cell in enumerate(array.tolist()):
                values[i] = self._number(column, cell, i, name_row, first)
        infinite = np.isinf(values)
        if infinite.any():
            i = int(np.flatnonzero(infinite)[0])
            raise InputError(f"{name_row(i)}, column {column!r}: {array[i]!r} is not a finite number",
                             field=column, row=first + i)
        missing = np.isnan(values)
        if missing.any():
            if self.encoder.impute != "mean":
                i = int(np.flatnonzero(missing)[0])
                raise InputError(f"{name_row(i)}, column {column!r}: the cell is empty; give a number (the model "
                                 "was trained without impute='mean')", field=column, row=first + i)
            values = np.where(missing, self.encoder.means[column], values)
        return (values - self.encoder.means[column]) / self.encoder.scales[column]

    @staticmethod
    def _number(column: str, cell: Any, i: int, name_row: Callable[[int], str], first: int) -> float:
        if _is_missing(cell):
            return math.nan
        if isinstance(cell, (bool, int, float, np.number, np.bool_)):
            return float(cell)
        if isinstance(cell, str):
            try:
                return float(cell.strip())
            except ValueError:
                pass
            raise InputError(f"{name_row(i)}, column {column!r}: {cell!r} is not a number", field=column,
                             row=first + i)
        raise InputError(f"{name_row(i)}, column {column!r}: expected a number, got {type(cell).__name__} "
                         f"{cell!r}", field=column, row=first + i)

    def _categorical(self, column: str, cells: Any, n: int, name_row: Callable[[int], str],
                     first: int) -> np.ndarray:
        lookup = self.lookups[column]
        onehot = np.zeros((n, len(self.encoder.categories[column])))
        for i, cell in enumerate(_as_column(cells, n).tolist()):
            if _is_missing(cell):
                value = MISSING
            elif isinstance(cell, (str, bool, int, float, np.number, np.bool_)):
                value = str(cell).strip()
            else:
                raise InputError(f"{name_row(i)}, column {column!r}: expected a category (text or number), got "
                                 f"{type(cell).__name__} {cell!r}", field=column, row=first + i)
            code = lookup.get(value)
            if code is not None:
                onehot[i, code] = 1.0
            elif self.unknown == "error":
                known = list(self.encoder.categories[column])
                shown = known[:20] + (["..."] if len(known) > 20 else [])
                raise InputError(f"{name_row(i)}, column {column!r}: category {value!r} was never seen in training; "
                                 f"known: {shown}", field=column, row=first + i)
        return onehot
