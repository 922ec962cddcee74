"""Predict a CSV or Parquet file of any size: read in chunks, predict, append, so memory does not grow
with the file; the output is written to a temporary file and renamed when complete."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from taskloom.serve.predictor import Predictor

Progress = Callable[[int, int], None]  # (done, total) in the unit the reader knows: bytes or rows

PARQUET_SUFFIXES = (".parquet", ".pq")


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def read_chunks(path: Path, rows: int, on_progress: Progress | None = None) -> Iterator[pd.DataFrame]:
    """The table at ``path`` in chunks of ``rows`` rows, reporting progress after each."""
    if not path.is_file():
        raise FileNotFoundError(f"input file {str(path)!r} does not exist")
    if is_parquet(path):
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(path)
        total, done = handle.metadata.num_rows, 0
        for batch in handle.iter_batches(batch_size=rows):
            frame = batch.to_pandas()
            done += len(frame)
            yield frame
            if on_progress is not None:
                on_progress(done, total)
        return
    size = max(path.stat().st_size, 1)
    with open(path, "rb") as handle:
        for frame in pd.read_csv(handle, chunksize=rows):
            yield frame
            if on_progress is not None:
                on_progress(min(handle.tell(), size), size)


class TableWriter:
    """Appends DataFrames to a CSV or Parquet file (by suffix) through a temporary file renamed on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary = path.with_name(f".{path.name}.tmp")
        self.parquet = is_parquet(path)
        self.writer: Any = None
        self.schema: Any = None
        self.started = False

    def write(self, frame: pd.DataFrame) -> None:
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
            if self.writer is None:
                self.schema = table.schema
                self.writer = pq.ParquetWriter(self.temporary, self.schema)
            self.writer.write_table(table)
        else:
            frame.to_csv(self.temporary, mode="a" if self.started else "w", header=not self.started, index=False)
        self.started = True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        os.replace(self.temporary, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.temporary.unlink(missing_ok=True)


def predict_file(predictor: Predictor, source: str | Path, out: str | Path, tasks: Sequence[str] | None = None,
                 chunk_rows: int = 8192, on_progress: Progress | None = None) -> int:
    """Predict every row of ``source`` (CSV / Parquet) into ``out`` (CSV / Parquet by suffix); returns the row count.

    Non-feature columns pass through; a row that cannot be encoded stops the run with an error naming it.
    """
    source, out = Path(source), Path(out)
    if source.resolve() == out.resolve():
        raise ValueError(f"--out {out} is the input file; choose another output path")
    names = predictor.pick_tasks(tasks)
    writer = TableWriter(out)
    done = 0
    try:
        for frame in read_chunks(source, chunk_rows, on_progress):
            first = done
            if is_parquet(source):
                def name_row(i: int) -> str:
                    return f"row {first + i} of {source}"
            else:
                def name_row(i: int) -> str:
                    return f"row {first + i} (line {first + i + 2} of {source})"
            frame = frame.reset_index(drop=True)
            writer.write(predictor.predict(frame, names, chunk_rows, name_row=name_row, first_row=first))
            done += len(frame)
        if done == 0:
            raise ValueError(f"{source} has no rows to predict")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return done


def predict_split(predictor: Predictor, split: str, out: str | Path, tasks: Sequence[str] | None = None) -> int:
    """Predict the run's own ``split`` of its built-in data set (rebuilt from the saved config)."""
    from taskloom.config import parse_config
    from taskloom.train.runner import load_data

    if split not in ("train", "val", "test"):
        raise ValueError(f"--split: choose train, val or test, not {split!r}")
    splits = load_data(parse_config(predictor.spec["config"], f"the config saved in {predictor.model_dir}"))
    data = getattr(splits, split)
    frame = predictor.predict(data.inputs, tasks)
    rows = (splits.info.get("rows") or {}).get(split)
    frame.insert(0, "row", list(range(len(frame))) if rows is None else [int(r) for r in rows])
    writer = TableWriter(Path(out))
    try:
        writer.write(frame)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return len(frame)
