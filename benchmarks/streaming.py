"""Streaming a table larger than memory: peak memory of one epoch, and streamed vs in-memory metrics.

Writes a Parquet table (default 5,000,000 rows x 40 float32 features x 4 tasks: 2 regression,
2 binary) in chunks of ``--chunk`` rows (one row group each), so generating it stays small in
memory; trains ONE epoch on it with ``data.streaming: true`` in a child process and reports that
process's peak resident memory (``ru_maxrss`` of the children), its wall time, training rows per
second and the test metrics. Then, on a ``--small-rows`` table, trains the same model streamed
(shuffle buffer >= training split) and in memory, and reports both test metrics and whether they
are equal (to 1e-6). Prints JSON. Not a test: run it by hand, once.

    python benchmarks/streaming.py --dir /tmp/streaming-bench
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 40
TASKS = [("r1", "regression"), ("r2", "regression"), ("b1", "binary"), ("b2", "binary")]


def write_table(path: Path, rows: int, chunk: int, seed: int = 0) -> None:
    """A generated Parquet table: features ~ N(3, 2), two linear/nonlinear regression and two binary targets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(4, FEATURES)) / np.sqrt(FEATURES)
    writer = None
    try:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            x = rng.normal(3.0, 2.0, size=(n, FEATURES)).astype(np.float32)
            signal = (x - 3.0) @ weights.T / 2.0
            columns: dict[str, Any] = {"id": np.arange(start, start + n, dtype=np.int64)}
            columns.update({f"f{j}": x[:, j] for j in range(FEATURES)})
            columns["r1"] = (signal[:, 0] + rng.normal(0, 0.3, n)).astype(np.float32)
            columns["r2"] = (np.sin(signal[:, 1]) + rng.normal(0, 0.3, n)).astype(np.float32)
            columns["b1"] = (signal[:, 2] + rng.logistic(0, 0.5, n) > 0).astype(np.int8)
            columns["b2"] = (signal[:, 3] * signal[:, 0] + rng.logistic(0, 0.5, n) > 0).astype(np.int8)
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table, row_group_size=chunk)
    finally:
        if writer is not None:
            writer.close()


def config(path: Path, output: Path, streaming: bool, batch_size: int, val: float, test: float,
           key: str | None = None) -> dict[str, Any]:
    """A one-epoch run on the table at ``path``; ``key``: split by that column (else by row position)."""
    return {
        "name": "streamed" if streaming else "in-memory", "output_dir": str(output),
        "data": {"dataset": "table", "options": {"path": str(path), "exclude": ["id"]},
                 "val_fraction": val, "test_fraction": test,
                 "streaming": streaming, "split": {"key": key},
                 "streaming_options": {"shuffle_buffer": 100_000, "read_rows": 65_536, "reference_rows": 20_000}},
        "tasks": [{"name": name, "kind": kind, "target": name} for name, kind in TASKS],
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [64]}}},
        "train": {"epochs": 1, "batch_size": batch_size, "baselines": False, "num_threads": 1},
    }


def child(config_file: Path) -> None:
    """Train the config (in this process) and print its test metrics, training seconds and rows as JSON."""
    from taskloom.config import parse_config
    from taskloom.train.runner import run_training

    settings = parse_config(json.loads(config_file.read_text()))
    started = time.perf_counter()
    result = run_training(settings)
    wall = time.perf_counter() - started
    cell = next(iter(result["cells"].values()))
    print(json.dumps({"wall_seconds": wall, "train_seconds": cell["train_seconds"], "test": cell["test"],
                      "train_rows": result["split_sizes"]["train"]}))


def run_child(settings: dict[str, Any], work: Path, name: str) -> dict[str, Any]:
    """Run :func:`child` in a fresh process; its peak resident memory is read from ``RUSAGE_CHILDREN``."""
    config_file = work / f"{name}.json"
    config_file.write_text(json.dumps(settings))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([sys.executable, __file__, "--child", str(config_file)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-4000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["peak_rss_mib"] = peak / 1024 if peak > before else None  # Linux reports KiB; the max over children so far
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the tables and runs go (default: a temp dir)")
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--small-rows", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=250_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="taskloom-streaming-"))
    work.mkdir(parents=True, exist_ok=True)
    big = work / "big.parquet"
    started = time.perf_counter()
    write_table(big, args.rows, args.chunk)
    generated = time.perf_counter() - started
    file_mib = big.stat().st_size / 2**20
    # small validation and test splits: their rows (and the bootstrap's 1000 x rows counts) are held in memory
    streamed = run_child(config(big, work / "runs", True, args.batch_size, 0.002, 0.004), work, "big")
    big.unlink()  # the generated data is not kept
    small = work / "small.parquet"
    write_table(small, args.small_rows, args.small_rows, seed=1)
    side = {}
    for streaming in (True, False):
        settings = config(small, work / "runs-small", streaming, 256, 0.1, 0.2, key="id")
        settings["data"]["streaming_options"]["shuffle_buffer"] = args.small_rows
        side["streamed" if streaming else "in_memory"] = run_child(settings, work, f"small-{streaming}")["test"]
    equal = all(abs(side["streamed"][t][m] - v) <= 1e-6 for t, row in side["in_memory"].items()
                for m, v in row.items() if isinstance(v, float))
    print(json.dumps({
        "table": {"rows": args.rows, "features": FEATURES, "tasks": dict(TASKS), "file_mib": file_mib,
                  "generation_seconds": generated},
        "one_epoch_streamed": {"peak_rss_mib": streamed["peak_rss_mib"], "wall_seconds": streamed["wall_seconds"],
                               "train_seconds": streamed["train_seconds"], "train_rows": streamed["train_rows"],
                               "rows_per_second": streamed["train_rows"] / streamed["train_seconds"],
                               "batch_size": args.batch_size, "test": streamed["test"]},
        "small_table": {"rows": args.small_rows, "streamed": side["streamed"], "in_memory": side["in_memory"],
                        "equal_to_1e-6": equal},
    }, indent=2))


if __name__ == "__main__":
    main()
