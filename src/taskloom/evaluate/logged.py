"""Task-by-task matrices logged per epoch in metrics.jsonl (``record["affinity"]``, ``record["conflict"]``).

TAG (Fifty et al. 2021) groups tasks by the affinity averaged over the whole of training;
:func:`mean_logged_matrix` gives that average, cell by cell, over the logged epochs.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping


def dedupe_epochs(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per (model, epoch), the last one written, in the order the pairs first appear.

    A run interrupted after logging an epoch but before checkpointing it logs that epoch
    again when resumed; the later record is the one the checkpoint continues from.
    """
    kept: dict[Any, dict[str, Any]] = {}
    for index, record in enumerate(records):
        key = (record.get("model"), record.get("epoch")) if "epoch" in record else ("line", index)
        kept[key] = dict(record)
    return list(kept.values())


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The JSON records of a metrics.jsonl file, one per (model, epoch); blank or malformed lines are skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return dedupe_epochs(records)


def variant_records(run_dir: str | Path, variant: str, seeds: Iterable[int]) -> list[dict[str, Any]]:
    """The metrics.jsonl records of every seed of one variant of a compare run (``VARIANT/seedN/``)."""
    records = []
    for seed in seeds:
        path = Path(run_dir) / variant / f"seed{seed}" / "metrics.jsonl"
        if path.is_file():
            records += read_records(path)
    return records


def mean_logged_matrix(
    records: Iterable[Mapping[str, Any]], key: str, model: str | None = None
) -> tuple[dict[str, dict[str, float | None]], int]:
    """The cell-wise mean of ``record[key]`` over the records holding it (of ``model`` when given).

    Returns ``({a: {b: mean}}, epochs)``; a cell never measured is ``None``; ``epochs`` counts
    the records used (0 when none held the key).
    """
    sums: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], int] = {}
    names: dict[str, None] = {}
    epochs = 0
    for record in records:
        matrix = record.get(key)
        if not isinstance(matrix, Mapping) or not matrix or (model is not None and record.get("model") != model):
            continue
        epochs += 1
        for a, row in matrix.items():
            names[a] = None
            for b, value in (row or {}).items():
                names[b] = None
                if value is None or not math.isfinite(value):
                    continue
                sums[(a, b)] = sums.get((a, b), 0.0) + float(value)
                counts[(a, b)] = counts.get((a, b), 0) + 1
    order = list(names)
    mean = {a: {b: (sums[(a, b)] / counts[(a, b)] if (a, b) in counts else None) for b in order} for a in order}
    return mean, epochs
