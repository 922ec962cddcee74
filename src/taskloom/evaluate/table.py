"""The compare table as plain files: compare.csv (one row per task and variant) and compare.md.

Both are written from ``compare.json`` (schema in :mod:`taskloom.evaluate.verdict`) with the
same numbers ``taskloom compare`` prints: per task and variant the test metric's mean and
sample standard deviation, the relative change against the baseline with its interval, the
verdict and its p-value, the reference scores; per variant delta-m % with its interval,
parameters and seconds. With auxiliary ablations, compare-auxiliary.csv and the "Auxiliary tasks"
section of compare.md: per (auxiliary, main task) the metric with and without it, the change with
its interval and the verdict, and delta-m over the main tasks.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from taskloom.evaluate.verdict import analyze

TASK_COLUMNS = ("task", "metric", "higher_is_better", "variant", "kind", "mean", "std", "units",
                "relative_change_pct", "low_pct", "high_pct", "verdict", "p_value", "covers", "seed_only_verdict",
                "worse_than_trivial", "trivial", "linear", "test")
VARIANT_COLUMNS = ("variant", "kind", "models", "delta_m_pct", "delta_m_low", "delta_m_high", "parameters",
                   "train_seconds_mean", "analysis_seconds_mean", "inference_seconds", "groups")

AUXILIARY_COLUMNS = ("auxiliary", "task", "metric", "higher_is_better", "with_variant", "without_variant",
                     "with_mean", "without_mean", "difference", "relative_change_pct", "low_pct", "high_pct",
                     "verdict", "p_value", "covers")
DELTA_M_ROW = "delta-m (main tasks)"


def _mean(per_seed: Any) -> float | None:
    if isinstance(per_seed, Mapping):
        values = [float(v) for v in per_seed.values() if v is not None]
        return sum(values) / len(values) if values else None
    return None if per_seed is None else float(per_seed)


def compare_rows(compare: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(task rows, variant rows)`` of a compare.json, with the columns ``TASK_COLUMNS`` / ``VARIANT_COLUMNS``."""
    result = compare.get("analysis") or analyze(compare, compare.get("run_dir"))
    baseline = result["baseline"]
    task_rows = []
    for task, spec in compare["tasks"].items():
        for name, variant in result["variants"].items():
            row = variant["tasks"][task]
            is_baseline = name == baseline
            task_rows.append({
                "task": task, "metric": spec.get("metric"), "higher_is_better": bool(spec["higher_is_better"]),
                "variant": name, "kind": variant.get("kind"), "mean": row.get("mean"), "std": row.get("std"),
                "units": row.get("n"),
                "relative_change_pct": None if is_baseline else row.get("relative_change"),
                "low_pct": row.get("low"), "high_pct": row.get("high"),
                "verdict": "baseline" if is_baseline else row.get("verdict"),
                "p_value": row.get("p_value"), "covers": row.get("covers"),
                "seed_only_verdict": (row.get("seed_only") or {}).get("verdict"),
                "worse_than_trivial": row.get("worse_than_trivial"), "trivial": row.get("trivial"),
                "linear": (((compare.get("references") or {}).get(task) or {}).get("linear") or {}).get(
                    spec.get("metric")),
                "test": row.get("test") or row.get("note"),
            })
    variant_rows = []
    for name, variant in result["variants"].items():
        raw = compare["variants"][name]
        dm = variant.get("delta_m") or {}
        variant_rows.append({
            "variant": name, "kind": variant.get("kind"), "models": raw.get("models"),
            "delta_m_pct": dm.get("mean"), "delta_m_low": dm.get("low"), "delta_m_high": dm.get("high"),
            "parameters": raw.get("parameters"), "train_seconds_mean": _mean(raw.get("train_seconds")),
            "analysis_seconds_mean": _mean(raw.get("analysis_seconds")),
            "inference_seconds": raw.get("inference_seconds"),
            "groups": " | ".join("{" + ", ".join(g) + "}" for g in raw.get("groups") or []) or None,
        })
    return task_rows, variant_rows


def auxiliary_rows(compare: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (auxiliary, main task), then per auxiliary a delta-m row; columns ``AUXILIARY_COLUMNS``."""
    result = compare.get("analysis") or analyze(compare, compare.get("run_dir"))
    rows = []
    for effect in result.get("auxiliary") or []:
        common = {"auxiliary": effect["auxiliary"], "with_variant": effect["reference"],
                  "without_variant": effect["variant"]}
        for task, row in effect["tasks"].items():
            spec = compare["tasks"][task]
            rows.append({**common, "task": task, "metric": spec.get("metric"),
                         "higher_is_better": bool(spec["higher_is_better"]), "with_mean": row.get("with"),
                         "without_mean": row.get("without"), "difference": row.get("difference"),
                         "relative_change_pct": row.get("relative_change"), "low_pct": row.get("low"),
                         "high_pct": row.get("high"), "verdict": row.get("verdict"), "p_value": row.get("p_value"),
                         "covers": row.get("covers") or row.get("note")})
        dm = effect.get("delta_m") or {}
        rows.append({**common, "task": DELTA_M_ROW, "relative_change_pct": dm.get("mean"), "low_pct": dm.get("low"),
                     "high_pct": dm.get("high"), "verdict": dm.get("verdict"), "p_value": dm.get("p_value"),
                     "covers": dm.get("covers")})
    return rows


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def rows_to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text with a header; an undefined value is an empty field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def rows_to_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` inside a cell is escaped, an undefined value is blank."""
    def cell(value: Any) -> str:
        return _cell(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_compare_tables(compare: Mapping[str, Any], run_dir: str | Path) -> tuple[Path, Path]:
    """Write RUN_DIR/compare.csv (task rows) and RUN_DIR/compare.md (task and variant tables); return both paths."""
    run_dir = Path(run_dir)
    task_rows, variant_rows = compare_rows(compare)
    csv_path, md_path = run_dir / "compare.csv", run_dir / "compare.md"
    csv_path.write_text(rows_to_csv(task_rows, TASK_COLUMNS))
    seeds = compare.get("seeds") or []
    text = [f"# taskloom compare: {compare.get('dataset', '')}", "",
            f"Test split, {len(seeds)} seed(s) x {compare.get('splits', 1)} split(s); baseline: "
            f"{compare.get('baseline')}. Relative changes and delta-m % (Maninis et al. 2019) with 95% intervals "
            "that cover the seeds and the test set's own noise (a paired bootstrap over test rows; with several "
            "splits, the corrected resampled t of Nadeau & Bengio 2003): helps / hurts only when the interval "
            "excludes 0; one seed decides nothing. `seed_only_verdict` is the old paired t-test over seeds alone. "
            "Undefined: the test split cannot measure the task; it is left out of delta-m. `trivial` and "
            "`linear` are reference scores on the same split.", "",
            "## Per task and variant", "", rows_to_markdown(task_rows, TASK_COLUMNS),
            "## Per variant", "", rows_to_markdown(variant_rows, VARIANT_COLUMNS)]
    effects = auxiliary_rows(compare)
    if effects:
        (run_dir / "compare-auxiliary.csv").write_text(rows_to_csv(effects, AUXILIARY_COLUMNS))
        text += ["## Auxiliary tasks", "",
                 "Does each auxiliary task help the main tasks? The multi-task model with it against the same model "
                 "trained without it (same seeds and splits), per main task: relative change % with the same 95% "
                 "interval as above (paired over seeds and test rows); helps / hurts only when it excludes 0, "
                 "otherwise no evidence.", "", rows_to_markdown(effects, AUXILIARY_COLUMNS)]
    md_path.write_text("\n".join(text))
    return csv_path, md_path
