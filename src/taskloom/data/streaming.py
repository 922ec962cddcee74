"""Tables larger than memory: a CSV or Parquet source read in record batches (``data.streaming: true``).

What is read, and when:

1. Feature types are inferred from the first ``INFERENCE_ROWS`` rows (the in-memory path looks at
   every row: on a table that small both choose the same columns).
2. One pass over the table gives the preprocessing statistics from the training rows only: per
   numeric feature the mean and standard deviation (:class:`~taskloom.data.moments.RunningMoments`),
   per categorical feature its vocabulary; per classification target its labels over every row
   (as the in-memory path reads the whole column). Every cell is checked on the way, so a bad
   row is named before training starts. The table loader does not standardize regression targets,
   so there is nothing more to fit.
3. A second pass keeps the validation and test rows in memory, encoded (float32 features plus
   targets, about ``4 x features`` bytes a row: evaluation, decision thresholds and the test
   bootstrap need every row's prediction; the bootstrap's 1000 replicate counts add 8 KB per test
   row), and a sample of at most ``reference_rows`` training
   rows for the trivial/linear reference scores and the data checks.
4. Training streams the training rows in every epoch (:mod:`taskloom.data.streaming_loader`).

Rows are split by :mod:`taskloom.data.hash_split` (a hash of ``data.split.key``, or of the row's
position: stable for the same files in the same order), never stratified.

Training and data parallelism: :mod:`taskloom.data.streaming_loader`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from taskloom.data.dataset import DataSplits, MultiTaskDataset
from taskloom.data.features import FeatureChoice, imbalance_notes, infer_features
from taskloom.data.hash_split import SPLIT_NAMES, TRAIN, assign_splits, key_hashes, position_hashes
from taskloom.data.moments import RunningMoments
from taskloom.data.sources import concat_datasets
from taskloom.data.table import (
    FeatureEncoder, _binary, _category_strings, _missing, _multiclass, check_finite_numeric, encode_target,
    encode_weights, transform_target,
)
from taskloom.task import Task

log = logging.getLogger(__name__)

INFERENCE_ROWS = 10_000
MAX_LABELS = 10_000
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
SAMPLE_SALT = 0x5A17
#: cells pandas.read_csv reads as missing and as booleans: a CSV is typed as the in-memory path types it
PANDAS_NULLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
                "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
PANDAS_TRUE, PANDAS_FALSE = ["True", "TRUE", "true"], ["False", "FALSE", "false"]


def _arrow_dataset() -> Any:
    try:
        import pyarrow.dataset as arrow_dataset
    except ImportError:
        raise ImportError("data.streaming reads tables with pyarrow, which is not installed: "
                          "pip install 'taskloom[data]'") from None
    return arrow_dataset


def table_files(path: str | Path) -> tuple[list[Path], str]:
    """The files of a table source (one file, or every .csv / .parquet / .pq file under a directory, sorted)."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise ValueError(f"table directory {str(path)!r} holds no .csv, .parquet or .pq file")
    else:
        raise FileNotFoundError(f"table path {str(path)!r} does not exist")
    formats = {SUFFIXES.get(f.suffix.lower(), "csv") for f in files}
    if len(formats) > 1:
        raise ValueError(f"table directory {str(path)!r} mixes CSV and Parquet files; keep one format per table")
    return files, formats.pop()


@dataclass
class Piece:
    """A part of the table read as a whole: a Parquet row group or a CSV file; ``start`` is its first row."""

    fragment: Any
    file: Path
    start: int | None = None
    rows: int | None = None


def table_pieces(files: Sequence[Path], form: str) -> tuple[Any, list[Piece]]:
    """The pyarrow dataset over ``files`` (one schema, the first file's) and its pieces in table order."""
    arrow_dataset = _arrow_dataset()
    if form == "csv":
        from pyarrow import csv

        options = csv.ConvertOptions(null_values=PANDAS_NULLS, true_values=PANDAS_TRUE, false_values=PANDAS_FALSE,
                                     strings_can_be_null=True)
        file_format: Any = arrow_dataset.CsvFileFormat(convert_options=options)
    else:
        file_format = "parquet"
    try:
        dataset = arrow_dataset.dataset([str(f) for f in files], format=file_format)
    except Exception as error:  # pyarrow raises several types for an unreadable file
        raise ValueError(f"table {[str(f) for f in files[:3]]}: pyarrow cannot open it as {form} ({error})") from None
    by_path = {Path(fragment.path): fragment for fragment in dataset.get_fragments()}
    pieces: list[Piece] = []
    start = 0
    for file in files:
        fragment = by_path[Path(str(file))]
        if form != "parquet":
            pieces.append(Piece(fragment, file))
            continue
        for group in fragment.split_by_row_group():
            rows = sum(g.num_rows for g in group.row_groups)
            pieces.append(Piece(group, file, start, rows))
            start += rows
    return dataset, pieces


@dataclass
class StreamingTable:
    """A table read in record batches: its pieces, split, feature choice and (after :meth:`fit`) statistics."""

    path: Path
    tasks: list[Task]
    val_fraction: float
    test_fraction: float
    seed: int
    key: str | None = None
    features: Sequence[str] | None = None
    categorical: Sequence[str] | None = None
    impute: str | None = None
    exclude: Sequence[str] = ()
    coerce_numeric: Sequence[str] = ()
    read_rows: int = 65_536
    choice: FeatureChoice = field(default_factory=FeatureChoice)
    encoder: FeatureEncoder | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    piece_train_rows: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.files, self.format = table_files(self.path)
        self.source = f"table {str(self.path)!r}"
        self.dataset, self.pieces = table_pieces(self.files, self.format)
        self.columns = [str(c) for c in self.dataset.schema.names]
        self._check_columns()

    # -- reading ---------------------------------------------------------------------------
    def _check_columns(self) -> None:
        where = f"{self.source} (first file {str(self.files[0])!r})"
        if self.key is not None and self.key not in self.columns:
            raise ValueError(f"data.split.key: column {self.key!r} is not in {where}; its columns are {self.columns}")
        for task in self.tasks:
            for what, column in (("target", task.target), ("sample_weight", task.sample_weight)):
                if column is not None and column not in self.columns:
                    raise ValueError(f"task {task.name!r}: {what} column {column!r} is not in {where}; "
                                     f"its columns are {self.columns}")

    @property
    def needed_columns(self) -> list[str]:
        wanted = list(self.choice.numeric) + list(self.choice.categorical)
        for task in self.tasks:
            wanted += [c for c in (task.target, task.sample_weight) if c is not None]
        if self.key is not None:
            wanted.append(self.key)
        return list(dict.fromkeys(wanted))

    def _read(self, piece: Piece, columns: Sequence[str] | None) -> Iterator[pd.DataFrame]:
        try:
            for batch in piece.fragment.to_batches(schema=self.dataset.schema, columns=list(columns or self.columns),
                                                   batch_size=self.read_rows, batch_readahead=1,
                                                   fragment_readahead=1):
                yield batch.to_pandas()
        except (OSError, ValueError) as error:
            raise ValueError(f"table file {str(piece.file)!r}: pyarrow cannot read it ({error}); every file is read "
                             "with the columns and types of the first file's first rows: fix the cell named, or "
                             "write the table with the same columns and types in every file") from None
        except Exception as error:  # pyarrow's ArrowInvalid is a ValueError; others name the file here too
            raise ValueError(f"table file {str(piece.file)!r}: {type(error).__name__}: {error}") from None

    def chunks(self, pieces: Sequence[int] | None = None,
               columns: Sequence[str] | None = None) -> Iterator[tuple[int, np.ndarray, pd.DataFrame]]:
        """``(piece index, row positions, frame)`` of each record batch of the chosen pieces (default all)."""
        chosen = range(len(self.pieces)) if pieces is None else pieces
        for index in chosen:
            piece = self.pieces[index]
            offset = piece.start or 0
            for frame in self._read(piece, columns):
                yield index, offset + np.arange(len(frame)), frame
                offset += len(frame)

    def row_namer(self, index: int, positions: np.ndarray) -> Any:
        """How an error names row ``i`` of a chunk: its table row and its place in its file."""
        piece = self.pieces[index]
        file_start = min((p.start or 0) for p in self.pieces if p.file == piece.file)
        if self.format == "csv":
            return lambda i: f"row {int(positions[i])} (line {int(positions[i]) - file_start + 2} of {piece.file})"
        return lambda i: f"row {int(positions[i])} (row {int(positions[i]) - file_start} of {piece.file})"

    def split_codes(self, frame: pd.DataFrame, positions: np.ndarray) -> np.ndarray:
        """Each row's split (hash_split codes) from its key, or from its position without a key."""
        if self.key is None:
            hashes = position_hashes(positions, self.seed)
        else:
            hashes = key_hashes(frame[self.key], self.seed, f"data.split.key column {self.key!r}")
        return assign_splits(hashes, self.val_fraction, self.test_fraction)

    # -- the statistics pass -------------------------------------------------------------------
    def choose_features(self) -> FeatureChoice:
        """Feature columns and types inferred from the first ``INFERENCE_ROWS`` rows (see module docstring)."""
        frames, rows = [], 0
        for _, _, frame in self.chunks():
            frames.append(frame)
            rows += len(frame)
            if rows >= INFERENCE_ROWS:
                break
        if not frames:
            raise ValueError(f"{self.source} has no data rows")
        head = pd.concat(frames, ignore_index=True).head(INFERENCE_ROWS)
        exclude = list(self.exclude)
        if self.key is not None and self.features is None:
            exclude.append(self.key)
        self.choice = infer_features(head, self.tasks, self.features, self.categorical, exclude,
                                     self.coerce_numeric, lambda i: f"row {i}", self.source)
        return self.choice

    def fit(self) -> "StreamingTable":
        """One pass over every row: statistics of the training rows, labels, split sizes, and every cell checked."""
        self.choose_features()
        numeric, categorical = self.choice.numeric, self.choice.categorical
        moments = {c: RunningMoments() for c in numeric}
        vocabulary: dict[str, set[str]] = {c: set() for c in categorical}
        seen: dict[str, dict[Any, str]] = {t.name: {} for t in self.tasks if t.kind in ("binary", "multiclass")}
        counts = np.zeros(3, dtype=np.int64)
        train_rows = [0] * len(self.pieces)
        start = 0
        for index, piece in enumerate(self.pieces):
            piece.start = start if piece.start is None else piece.start
            rows = 0
            for frame in self._read(piece, self.needed_columns):
                positions = piece.start + rows + np.arange(len(frame))
                rows += len(frame)
                name_row = self.row_namer(index, positions)
                codes = self.split_codes(frame, positions)
                train = codes == TRAIN
                counts += np.bincount(codes, minlength=3)
                train_rows[index] += int(train.sum())
                values = self._numeric_frame(frame, name_row)
                for column in numeric:
                    moments[column].add(values[column].to_numpy()[train])
                for column in categorical:
                    vocabulary[column].update(_category_strings(frame[column][train]))
                self._check_targets(frame, name_row, seen)
            piece.rows = rows if piece.rows is None else piece.rows
            start = piece.start + piece.rows
        self.sizes = {name: int(counts[code]) for name, code in SPLIT_NAMES.items()}
        self._check_sizes(start)
        self.piece_train_rows = train_rows
        self.encoder = FeatureEncoder(
            list(numeric), list(categorical), self.impute,
            {c: m.mean if m.count else 0.0 for c, m in moments.items()},
            {c: (m.std if m.std > 0 else 1.0) if m.count else 1.0 for c, m in moments.items()},
            {c: sorted(v) for c, v in vocabulary.items()},
        )
        self._fit_labels(seen)
        return self

    def _numeric_frame(self, frame: pd.DataFrame, name_row: Any) -> pd.DataFrame:
        numeric = self.choice.numeric
        check_finite_numeric(frame, numeric, name_row, self.choice.coerced)
        values = frame[list(numeric)].apply(pd.to_numeric, errors="coerce").astype(float)
        if self.impute != "mean":
            for column in numeric:
                missing = np.isnan(values[column].to_numpy())
                if missing.any():
                    raise ValueError(f"feature column {column!r}: {name_row(int(np.flatnonzero(missing)[0]))} is "
                                     "empty; fill it, drop the row, or pass the option impute='mean'")
        return values

    def _check_targets(self, frame: pd.DataFrame, name_row: Any, seen: dict[str, dict[Any, str]]) -> None:
        """Row-level target and weight checks, and the first row of each classification label."""
        for task in self.tasks:
            series = frame[task.target]
            if task.name not in seen:
                encode_target(task, series, name_row, {})
                continue
            labelled = ~_missing(series)
            series = transform_target(task, series, labelled, name_row, {})
            firsts = seen[task.name]
            cells = series[labelled].drop_duplicates()
            for row, value in cells.items():
                if value not in firsts:
                    firsts[value] = name_row(int(row))
            if len(firsts) > MAX_LABELS:
                raise ValueError(f"task {task.name!r} (column {task.target!r}): more than {MAX_LABELS} distinct "
                                 f"labels; a {task.kind} target needs few classes: is this the right column?")
        encode_weights(frame, self.tasks, name_row)

    def _fit_labels(self, seen: dict[str, dict[Any, str]]) -> None:
        """Label mappings as the in-memory path makes them from the whole column (its rules, on the distinct labels)."""
        self.labels = {}
        for task in self.tasks:
            if task.transform is not None:
                transform_target(task, pd.Series([0.0]), np.ones(1, dtype=bool), lambda i: "", self.labels)
            if task.name not in seen:
                continue
            firsts = seen[task.name]
            values = pd.Series(list(firsts))
            where_rows = list(firsts.values())
            name_row = lambda i, rows=where_rows: rows[i]  # noqa: E731
            labelled = np.ones(len(values), dtype=bool)
            where = f"task {task.name!r} (column {task.target!r})"
            if task.kind == "binary":
                _binary(task, values, labelled, where, name_row, self.labels)
            else:
                _multiclass(task, values, labelled, where, name_row, self.labels)

    def _check_sizes(self, rows: int) -> None:
        empty = [name for name, size in self.sizes.items() if size == 0]
        if empty:
            raise ValueError(f"{self.source} has {rows} data rows; the hash split (val_fraction {self.val_fraction}, "
                             f"test_fraction {self.test_fraction}) left the {' and '.join(empty)} split empty: "
                             "add rows or raise the fractions")

    # -- encoding ------------------------------------------------------------------------------
    def encode(self, frame: pd.DataFrame, name_row: Any) -> MultiTaskDataset:
        """Rows of the table encoded as the in-memory path encodes them (features, targets, masks, weights)."""
        if self.encoder is None:
            raise RuntimeError("call fit() before encoding rows: the statistics come from the training rows")
        numeric = self._numeric_frame(frame, name_row)
        encoded = pd.concat([numeric, frame[list(self.choice.categorical)]], axis=1)
        inputs = torch.from_numpy(self.encoder.transform(encoded, name_row))
        targets, masks = {}, {}
        for task in self.tasks:
            targets[task.name], masks[task.name] = self._encode_target(task, frame[task.target], name_row)
        data = MultiTaskDataset(inputs, targets, masks, encode_weights(frame, self.tasks, name_row))
        data.apply_conditions(self.tasks)
        return data

    def _encode_target(self, task: Task, series: pd.Series, name_row: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if task.kind not in ("binary", "multiclass"):
            return encode_target(task, series, name_row, {})
        labelled = ~_missing(series)
        series = transform_target(task, series, labelled, name_row, {})
        mask = torch.from_numpy(labelled.copy())
        if task.kind == "binary":
            positive = self.labels["positive_class"][task.name]
            return torch.from_numpy(((series == positive).to_numpy() & labelled).astype(np.float32)), mask
        classes = self.labels.get("class_names", {}).get(task.name)
        if classes is None:
            return _multiclass(task, series, labelled, f"task {task.name!r}", name_row, {}), mask
        lookup = {c: i for i, c in enumerate(classes)}
        codes = [lookup.get(str(v), 0) if ok else 0 for v, ok in zip(series.tolist(), labelled)]
        return torch.tensor(codes, dtype=torch.long), mask

    def encoded_rows(self, frame: pd.DataFrame, positions: np.ndarray, keep: np.ndarray,
                     piece: int) -> tuple[MultiTaskDataset, np.ndarray]:
        """The rows ``keep`` of a chunk, encoded, with their positions."""
        rows = np.flatnonzero(keep)
        part = frame.iloc[rows].reset_index(drop=True)
        return self.encode(part, self.row_namer(piece, positions[rows])), positions[rows]

    def held_splits(self, reference_rows: int) -> dict[str, tuple[MultiTaskDataset, np.ndarray]]:
        """Validation and test rows, and a sample of at most ``reference_rows`` training rows, encoded in memory."""
        share = min(1.0, reference_rows / max(self.sizes["train"], 1))
        parts: dict[str, list[tuple[MultiTaskDataset, np.ndarray]]] = {name: [] for name in SPLIT_NAMES}
        for index, positions, frame in self.chunks(columns=self.needed_columns):
            codes = self.split_codes(frame, positions)
            sampled = position_hashes(positions, self.seed ^ SAMPLE_SALT) < share
            for name, code in SPLIT_NAMES.items():
                keep = (codes == code) & (sampled if code == TRAIN else True)
                if keep.any():
                    parts[name].append(self.encoded_rows(frame, positions, keep, index))
        if not parts["train"]:
            raise ValueError(f"data.streaming_options.reference_rows {reference_rows}: the sample of training rows "
                             "it asks for came out empty; raise it (e.g. to 10000)")
        return {name: (concat_datasets([d for d, _ in got]), np.concatenate([p for _, p in got]))
                for name, got in parts.items()}

    def loader(self, batch_size: int, seed: int, shuffle_buffer: int) -> Any:
        """A :class:`~taskloom.data.streaming_loader.StreamingLoader` of the training rows."""
        from taskloom.data.streaming_loader import StreamingLoader

        return StreamingLoader(self, batch_size, seed, shuffle_buffer)


def load_streaming_table(
    tasks: Sequence[Task],
    path: str | Path,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    key: str | None = None,
    reference_rows: int = 50_000,
    read_rows: int = 65_536,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    impute: str | None = None,
    exclude: Sequence[str] = (),
    coerce_numeric: Sequence[str] = (),
) -> DataSplits:
    """A streamed table as :class:`DataSplits`: validation and test in memory, training rows streamed.

    ``splits.train`` is the in-memory sample of at most ``reference_rows`` training rows (for the
    reference scores and data checks); ``splits.info["streaming"]`` is the fitted
    :class:`StreamingTable` whose :meth:`~StreamingTable.loader` trains on every training row.
    """
    if not tasks:
        raise ValueError("the table data set has no default tasks; give tasks, each with a target column")
    table = StreamingTable(Path(path), list(tasks), val_fraction, test_fraction, seed, key, features, categorical,
                           impute, exclude, coerce_numeric, read_rows).fit()
    held = table.held_splits(reference_rows)
    encoder = table.encoder
    assert encoder is not None
    train, val, test = (held[name][0] for name in ("train", "val", "test"))
    numeric, categorical_columns = table.choice.numeric, table.choice.categorical
    info: dict[str, Any] = dict(table.labels)
    info.update(
        source=str(path), stratified=False,
        split={"kind": "hash", "key": key if key is not None else "row position", "seed": seed},
        feature_names=encoder.feature_names, numeric_features=list(numeric),
        categorical_features=list(categorical_columns), sizes=dict(table.sizes),
        rows={name: held[name][1] for name in ("train", "val", "test")},
        standardization={c: (encoder.means[c], encoder.scales[c]) for c in numeric},
        feature_report=table.choice.report,
        notes=imbalance_notes(list(tasks), train.targets, train.masks, np.arange(len(train))),
        preprocessing=encoder.to_dict(), streaming=table,
        reference_rows=len(train),
    )
    splits = DataSplits(train, val, test, list(tasks), (int(train.inputs.shape[1]),), info)
    splits.validate()
    log.info("streamed %s: %d training rows (a sample of %d held for reference scores), %d validation and %d "
             "test rows held in memory", table.source, table.sizes["train"], len(train), len(val), len(test))
    return splits


__all__ = ["Piece", "StreamingTable", "load_streaming_table", "table_files", "table_pieces"]
