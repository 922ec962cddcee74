"""Does multi-task training help? Per-task verdicts against single-task baselines, with intervals.

A verdict must cover every source of noise it depends on: the seeds *and* the finite test
set (Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks").

Interval of a relative change (per task) and of delta-m % (Maninis et al. 2019), one split:
  * seed noise: the per-seed relative changes (paired seeds; Welch-style otherwise) give
    V_seed = s^2 / S;
  * test-set noise: a paired bootstrap over test rows (the same resampled rows for every
    model of the split, :mod:`taskloom.evaluate.resampling`) gives V_rows, the variance of
    the statistic over replicates with the seeds held fixed;
  * the two are independent (law of total variance), so SE^2 = V_seed + V_rows, and the
    interval is estimate +- t_(S-1) SE: the seeds' degrees of freedom, a conservative choice.
    (Welch-Satterthwaite degrees of freedom, estimated from a 2-df seed variance, were
    anti-conservative in simulation: 12.5 % false verdicts in an A/A test; a percentile
    bootstrap over 2 or 3 seeds is narrower still.) ``benchmarks/verdict_calibration.py``
    measures the false-verdict rate of A/A comparisons and the power.
  * one seed: V_seed cannot be estimated; the interval covers the test rows only and says so,
    and no helps/hurts is claimed from it ("undecided (1 seed)").
Several splits (``compare --splits N``): the unit of replication is the split; per-split
means get the corrected resampled t-interval of Nadeau & Bengio (2003), variance inflated by
(1/N + n_test/n_train) for the overlap of training sets, with N - 1 degrees of freedom.
"helps" / "hurts" only when the interval excludes zero. The old seed-only paired t-test is
kept as ``seed_only`` beside each verdict, for comparison.

Does an auxiliary task X help? The full variant ("with X") is compared with its ablation
variant trained without X (``kind: "ablation"``, ``reference``: the full variant, ``without``:
the tasks left out) on every main task, by the very same interval and verdict as a variant
against the single-task baseline, the ablation taking the baseline's place
(:func:`auxiliary_effects`); delta-m over the main tasks likewise.

A task whose test labels cannot measure its metric (``compare["evaluation"]``, see
:mod:`taskloom.evaluate.degenerate`) is marked undefined and left out of delta-m.

``compare.json`` schema (written by every ``run``, ``train`` and ``compare``)::

    {
      "dataset": "adult",
      "tasks": {"income": {"metric": "auroc", "higher_is_better": true}, ...},
      "baseline": "single",                       # null when no single-task models were trained
      "units": {"0": {"split": 0, "seed": 0}, ...},   # optional; default: each key is a seed of split 0
      "split_sizes": {"train": 7000, "val": 1000, "test": 2000},
      "evaluation": {"test": {"income": {"defined": true, "reason": null, ...}}, "val": {...}},
      "variants": {
        "single": {
          "kind": "single",                       # "single": one model per task; "multi"; "groups"
          "values": {"0": {"income": 0.90, "sex": 0.81}, "1": {...}},   # unit -> task -> main metric
          "cells": {"0": {"income": "single/income/seed0", ...}},      # optional: where the replicates are
          "parameters": 12345, "train_seconds": {"0": 12.5}, "inference_seconds": 0.02
        },
        "hard+pcgrad": {"kind": "multi", "architecture": "hard", "balancing": "pcgrad", "values": {...}},
        "groups-2": {"kind": "groups", "groups": [["a", "b"], ["c"]], "values": {...}},
        "hard+pcgrad-without-aux": {"kind": "ablation", "reference": "hard+pcgrad", "without": ["aux"], ...}
      },
      "references": {"income": {"trivial": {...}, "linear": {...}}}
    }

A null value means the metric was not defined.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats


HELPS, HURTS, NOISE, UNDECIDED = "helps", "hurts", "within noise", "undecided (1 seed)"
UNDEFINED = "undefined"
NO_EVIDENCE = "no evidence"


@dataclass
class TaskVerdict:
    """The outcome of one task's test: verdict, the test used, its p-value and the seed counts."""

    verdict: str
    test: str
    p_value: float | None
    n_variant: int
    n_baseline: int


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for one value)."""
    if not values:
        raise ValueError("no values to summarize")
    array = np.asarray(values, dtype=float)
    return float(array.mean()), (float(array.std(ddof=1)) if len(array) > 1 else None)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """Mean and Student-t confidence interval over seeds; no interval from one value."""
    mean, std = mean_std(values)
    if std is None:
        return mean, None, None
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, mean - half, mean + half


def task_verdict(
    variant: Sequence[float],
    baseline: Sequence[float],
    higher_is_better: bool,
    paired: bool = False,
    alpha: float = 0.05,
) -> TaskVerdict:
    """The seed-only test: paired t-test over seeds (Welch's when unpaired); kept beside the real verdict.

    It ignores the test set's own sampling noise; with one seed on a side it decides nothing.
    """
    if not variant or not baseline:
        raise ValueError("a verdict needs at least one value for the variant and for the baseline")
    sign = 1.0 if higher_is_better else -1.0
    v, b = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    n_v, n_b = len(v), len(b)
    if n_v < 2 or n_b < 2:
        return TaskVerdict(UNDECIDED, "one seed: no seed-only test", None, n_v, n_b)
    if paired and n_v == n_b:
        diff = sign * (v - b)
        test = f"paired t-test over {n_v} seeds, alpha {alpha:g}"
        if np.allclose(diff, diff[0]):
            p = 0.0 if diff[0] != 0 else 1.0
        else:
            p = float(stats.ttest_rel(v, b).pvalue)
        mean_diff = float(diff.mean())
    else:
        mean_diff = sign * float(v.mean() - b.mean())
        test = f"Welch t-test ({n_v} vs {n_b} seeds), alpha {alpha:g}"
        if v.std() == 0 and b.std() == 0:
            p = 0.0 if mean_diff != 0 else 1.0
        else:
            p = float(stats.ttest_ind(v, b, equal_var=False).pvalue)
    if p < alpha and mean_diff != 0:
        return TaskVerdict(HELPS if mean_diff > 0 else HURTS, test, p, n_v, n_b)
    return TaskVerdict(NOISE, test, p, n_v, n_b)




def _values(variant: Mapping[str, Any], name: str) -> dict[str, dict[str, float | None]]:
    values = variant.get("values")
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"compare.json: variant {name!r} has no 'values' (unit -> task -> metric)")
    return {str(unit): dict(row) for unit, row in values.items()}


@dataclass
class Interval:
    """An estimate with its interval, p-value (t-test of zero), what noise it covers and how."""

    mean: float
    low: float | None
    high: float | None
    p_value: float | None
    covers: str
    method: str
    df: float | None = None


def _sign(higher_is_better: bool) -> float:
    return 1.0 if higher_is_better else -1.0


def _t_interval(estimate: float, variance: float, df: float, confidence: float) -> tuple[float, float, float]:
    """``(low, high, p)`` of ``estimate +- t_df sqrt(variance)``; a zero variance gives a point interval."""
    if variance <= 0:
        return estimate, estimate, (1.0 if estimate == 0 else 0.0)
    se = math.sqrt(variance)
    quantile = float(stats.t.ppf(0.5 + confidence / 2, df)) if math.isfinite(df) else float(
        stats.norm.ppf(0.5 + confidence / 2))
    p = float(2 * (stats.t.sf(abs(estimate) / se, df) if math.isfinite(df) else stats.norm.sf(abs(estimate) / se)))
    return estimate - quantile * se, estimate + quantile * se, p


def combined_interval(
    per_unit: Mapping[str, float] | None,
    replicates: np.ndarray | None,
    estimate: float,
    split_of: Mapping[str, int],
    overlap: float,
    confidence: float = 0.95,
    seed_variance: tuple[float, float] | None = None,
) -> Interval | None:
    """The interval of a statistic from its per-unit values (seeds or split x seed) and row replicates.

    ``per_unit``: the statistic per unit (paired: each unit's own change); ``seed_variance``
    instead gives ``(V_seed, df)`` directly (unpaired units, Welch). ``replicates``: the
    statistic on each bootstrap replicate of the test rows (one split only). ``overlap`` is
    n_test / n_train for the Nadeau-Bengio correction when units span several splits.
    """
    units = list(per_unit or {})
    splits = sorted({split_of.get(u, 0) for u in units})
    if len(splits) >= 2:
        means = [float(np.mean([per_unit[u] for u in units if split_of.get(u, 0) == j])) for j in splits]
        n = len(means)
        variance = (1.0 / n + overlap) * float(np.var(means, ddof=1))
        low, high, p = _t_interval(estimate, variance, n - 1, confidence)
        return Interval(estimate, low, high, p, f"{n} splits x seeds (test sets, training sets and seeds)",
                        f"corrected resampled t over {n} splits (Nadeau & Bengio 2003)", n - 1)
    v_seed, df_seed = (None, None)
    if seed_variance is not None:
        v_seed, df_seed = seed_variance
    elif len(units) >= 2:
        v_seed, df_seed = float(np.var([per_unit[u] for u in units], ddof=1)) / len(units), len(units) - 1
    kept = None if replicates is None else replicates[np.isfinite(replicates)]
    v_rows = float(np.var(kept, ddof=1)) if kept is not None and len(kept) >= 20 else None
    if v_seed is None and v_rows is None:
        return None
    if v_seed is None:
        low, high, p = _t_interval(estimate, v_rows, math.inf, confidence)
        return Interval(estimate, low, high, p, "test rows only (one seed: seed variation not measured)",
                        f"paired bootstrap over test rows ({len(kept)} replicates)", math.inf)
    if v_rows is None:
        low, high, p = _t_interval(estimate, v_seed, df_seed, confidence)
        return Interval(estimate, low, high, p, "seeds only (no test-row replicates)",
                        f"t-interval over {len(units) or 'the'} seeds", df_seed)
    total = v_seed + v_rows
    low, high, p = _t_interval(estimate, total, df_seed, confidence)
    return Interval(estimate, low, high, p, "seeds and test rows",
                    f"seed variance + paired bootstrap over test rows ({len(kept)} replicates), "
                    f"t with the seeds' {df_seed:.3g} degrees of freedom", df_seed)


def _verdict(interval: Interval | None) -> str:
    if interval is None or interval.low is None:
        return UNDECIDED
    if interval.low > 0 or interval.high < 0:
        if interval.covers.startswith("test rows only"):
            return UNDECIDED
        return HELPS if interval.low > 0 else HURTS
    return NOISE


Replicates = Mapping[tuple[str, str, str], np.ndarray]


def _replicate_means(replicates: Replicates | None, variant: str, units: Sequence[str], task: str) -> np.ndarray | None:
    """The task's metric per bootstrap replicate, averaged over ``units`` (None if any is missing)."""
    if replicates is None or not units:
        return None
    rows = [replicates.get((variant, u, task)) for u in units]
    if any(r is None for r in rows):
        return None
    return np.mean(np.stack(rows), axis=0)


def _relative(value: float | np.ndarray, base: float | np.ndarray, sign: float) -> Any:
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * sign * (value - base) / np.abs(base)


def compare_variants(
    compare: Mapping[str, Any],
    replicates: Replicates | None = None,
    alpha: float = 0.05,
    confidence: float | None = None,
) -> dict[str, Any]:
    """Per variant and task: mean, std, relative change with its interval and verdict; delta-m with its interval.

    ``compare`` follows the schema in the module docstring; ``replicates[(variant, unit, task)]``
    holds the task's metric on each bootstrap replicate of its split's test rows (see
    :func:`load_replicates`); without them intervals cover the seeds only, and say so.
    Returns ``{"baseline": name, "variants": {name: {"tasks": {task: {...}}, "delta_m": {...}}}}``, and
    ``"auxiliary"``: :func:`auxiliary_effects` when the grid holds auxiliary ablations.
    """
    confidence = 1 - alpha if confidence is None else confidence
    tasks = compare.get("tasks")
    variants = compare.get("variants")
    if not isinstance(tasks, Mapping) or not isinstance(variants, Mapping):
        raise ValueError("compare.json needs 'tasks' and 'variants' objects (see taskloom.evaluate.verdict)")
    baseline_name = compare.get("baseline", "single")
    if baseline_name is not None and baseline_name not in variants:
        raise ValueError(f"compare.json: baseline variant {baseline_name!r} is not among {sorted(variants)}")
    hib = {t: bool(spec["higher_is_better"]) for t, spec in tasks.items()}
    undefined, split_of, overlap = _context(compare)
    base_values = _values(variants[baseline_name], baseline_name) if baseline_name else {}
    references = {t: ((r or {}).get("trivial") or {}).get(tasks[t].get("metric"))
                  for t, r in (compare.get("references") or {}).items() if t in tasks}
    out: dict[str, Any] = {"baseline": baseline_name, "alpha": alpha, "confidence": confidence, "variants": {}}
    for name, variant in variants.items():
        values = _values(variant, name)
        rows: dict[str, Any] = {}
        changes: dict[str, dict[str, Any]] = {}
        for task in tasks:
            rows[task], change = _task_row(name, task, values, base_values, baseline_name, hib[task], undefined,
                                           replicates, split_of, overlap, confidence, alpha,
                                           tasks[task].get("metric"))
            _compare_with_trivial(rows[task], references.get(task), hib[task])
            if tasks[task].get("role") == "auxiliary":
                rows[task]["role"] = "auxiliary"
            elif change is not None:
                changes[task] = change
        entry = {"kind": variant.get("kind"), "tasks": rows,
                 "delta_m": None if name == baseline_name or baseline_name is None else
                 _delta_m(changes, tasks, undefined, split_of, overlap, confidence)}
        for key in ("parameters", "train_seconds", "inference_seconds", "groups", "architecture", "balancing"):
            if key in variant:
                entry[key] = variant[key]
        out["variants"][name] = entry
    effects = auxiliary_effects(compare, replicates, alpha, confidence)
    if effects:
        out["auxiliary"] = effects
    return out


def _context(compare: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int], float]:
    """What every interval of a compare.json needs: undefined tasks, each unit's split, n_test / n_train."""
    undefined = {t: e.get("reason") for t, e in ((compare.get("evaluation") or {}).get("test") or {}).items()
                 if not e.get("defined", True)}
    split_of = {u: int(info.get("split", 0)) for u, info in (compare.get("units") or {}).items()}
    sizes = compare.get("split_sizes") or {}
    overlap = sizes["test"] / sizes["train"] if sizes.get("train") and sizes.get("test") else 0.2
    return undefined, split_of, overlap


def _effect_verdict(low: float | None, high: float | None, covers: str | None) -> str:
    """helps / hurts when the interval excludes 0 (as :func:`_verdict`), otherwise "no evidence"."""
    if low is None or high is None:
        return NO_EVIDENCE
    verdict = _verdict(Interval(0.0, low, high, None, covers or "", ""))
    return verdict if verdict in (HELPS, HURTS) else NO_EVIDENCE


def auxiliary_effects(compare: Mapping[str, Any], replicates: Replicates | None = None, alpha: float = 0.05,
                      confidence: float | None = None) -> list[dict[str, Any]]:
    """Per ablation variant: does adding its left-out auxiliary task(s) help each main task, and delta-m.

    Each main task's row is :func:`compare_variants`'s row of the full variant with the ablation as
    the baseline (paired over units and test rows), plus ``with`` / ``without`` means, their
    ``difference`` and a verdict helps / hurts / no evidence. Empty when there are no ablations.
    """
    confidence = 1 - alpha if confidence is None else confidence
    tasks, variants = compare["tasks"], compare["variants"]
    undefined, split_of, overlap = _context(compare)
    mains = [t for t, spec in tasks.items() if spec.get("role") != "auxiliary"]
    out = []
    for name, ablation in variants.items():
        if ablation.get("kind") != "ablation":
            continue
        reference = ablation.get("reference")
        without = list(ablation.get("without") or [])
        effect: dict[str, Any] = {"variant": name, "reference": reference, "without": without,
                                  "auxiliary": without[0] if len(without) == 1 else "all auxiliaries", "tasks": {}}
        if reference not in variants:
            effect["note"] = f"the full variant {reference!r} is not in compare.json"
            out.append(effect)
            continue
        ours, theirs = _values(variants[reference], reference), _values(ablation, name)
        changes: dict[str, dict[str, Any]] = {}
        for task in mains:
            higher = bool(tasks[task]["higher_is_better"])
            row, change = _task_row(reference, task, ours, theirs, name, higher, undefined, replicates, split_of,
                                    overlap, confidence, alpha, tasks[task].get("metric"))
            row["detail"] = row.pop("verdict", None)
            row["with"], row["without"] = row.get("mean"), row.get("baseline_mean")
            row["difference"] = (None if row["with"] is None or row["without"] is None
                                 else float(row["with"] - row["without"]))
            row["verdict"] = (UNDEFINED if row["detail"] == UNDEFINED else
                              _effect_verdict(row.get("low"), row.get("high"), row.get("covers")))
            effect["tasks"][task] = row
            if change is not None:
                changes[task] = change
        delta = _delta_m(changes, tasks, undefined, split_of, overlap, confidence)
        delta["verdict"] = _effect_verdict(delta.get("low"), delta.get("high"), delta.get("covers"))
        effect["delta_m"] = delta
        out.append(effect)
    return out


def _task_row(name: str, task: str, values: Mapping[str, Mapping[str, Any]], base_values: Mapping[str, Mapping[str, Any]],
              baseline_name: str | None, higher: bool, undefined: Mapping[str, Any], replicates: Replicates | None,
              split_of: Mapping[str, int], overlap: float, confidence: float, alpha: float,
              metric: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One task's row of one variant, and what delta-m needs of it (None when it cannot enter)."""
    if task in undefined:
        return {"metric": metric, "verdict": UNDEFINED, "note": f"undefined on the test split: {undefined[task]}"}, None
    ours = {u: row[task] for u, row in values.items() if row.get(task) is not None}
    theirs = {u: row[task] for u, row in base_values.items() if row.get(task) is not None}
    if not ours:
        return {"metric": metric, "note": "no value"}, None
    mean, std = mean_std(list(ours.values()))
    row: dict[str, Any] = {"metric": metric, "higher_is_better": higher, "mean": mean, "std": std, "n": len(ours)}
    if baseline_name is None or name == baseline_name:
        return row, None
    if not theirs:
        row["note"] = "no baseline value"
        return row, None
    base_mean, base_std = mean_std(list(theirs.values()))
    row.update(baseline_mean=base_mean, baseline_std=base_std)
    if base_mean == 0:
        row["note"] = "the baseline's mean is 0: a relative change is undefined"
        return row, None
    sign = _sign(higher)
    estimate = float(_relative(mean, base_mean, sign))
    row["relative_change"] = estimate
    paired = set(ours) == set(theirs)
    # each unit's change against the baseline's mean, so that their mean is the estimate itself
    per_unit = {u: 100.0 * sign * (ours[u] - theirs[u]) / abs(base_mean) for u in ours} if paired else None
    seed_variance = None
    if not paired and len(ours) >= 2 and len(theirs) >= 2:
        scale = (100.0 / abs(base_mean)) ** 2
        a = float(np.var(list(ours.values()), ddof=1)) / len(ours)
        b = float(np.var(list(theirs.values()), ddof=1)) / len(theirs)
        df = (a + b) ** 2 / (a ** 2 / (len(ours) - 1) + b ** 2 / (len(theirs) - 1)) if a + b > 0 else math.inf
        seed_variance = (scale * (a + b), df)
    ours_r = _replicate_means(replicates, name, sorted(ours), task)
    theirs_r = _replicate_means(replicates, baseline_name, sorted(theirs), task)
    rep = None if ours_r is None or theirs_r is None else _relative(ours_r, theirs_r, sign)
    interval = combined_interval(per_unit, rep, estimate, split_of, overlap, confidence, seed_variance)
    if interval is not None:
        row.update(low=interval.low, high=interval.high, p_value=interval.p_value, covers=interval.covers,
                   test=interval.method)
    row["verdict"] = _verdict(interval)
    common = sorted(set(ours) & set(theirs))
    seed_only = task_verdict([ours[u] for u in common] if paired else list(ours.values()),
                             [theirs[u] for u in common] if paired else list(theirs.values()),
                             higher, paired, alpha)
    row["seed_only"] = {"verdict": seed_only.verdict, "p_value": seed_only.p_value, "test": seed_only.test}
    if ours_r is not None and theirs_r is not None:
        row["replicates"] = int(np.isfinite(rep).sum())
    return row, {"per_unit": per_unit, "estimate": estimate, "replicates": rep, "seed_variance": seed_variance}


UNSTABLE_FRACTION = 0.01


def _compare_with_trivial(row: dict[str, Any], trivial: float | None, higher: bool) -> None:
    """Flag a model worse than the trivial predictor, and a relative change made unstable by a tiny baseline.

    A lower-is-better baseline (an error) that is under 1 % of the trivial predictor's error
    makes every relative change against it explode: choose ``main_metric: r2`` or ``mae`` then.
    """
    if trivial is None or row.get("mean") is None:
        return
    row["trivial"] = trivial
    row["worse_than_trivial"] = bool((row["mean"] - trivial) * _sign(higher) < 0)
    base = row.get("baseline_mean")
    if not higher and base is not None and trivial > 0 and abs(base) < UNSTABLE_FRACTION * trivial:
        row["unstable"] = (f"the single-task {row.get('metric')} {base:.3g} is {100 * abs(base) / trivial:.2g}% of "
                           f"the trivial predictor's {trivial:.3g}: relative changes against it explode; set "
                           "main_metric: r2 or mae for this task")


def _delta_m(changes: Mapping[str, Mapping[str, Any]], tasks: Mapping[str, Any], undefined: Mapping[str, Any],
             split_of: Mapping[str, int], overlap: float, confidence: float) -> dict[str, Any]:
    """Delta-m % over the tasks with a relative change, its interval by the same rule as a task's."""
    left_out = {t: ("auxiliary task" if tasks[t].get("role") == "auxiliary" else
                    f"undefined on the test split: {undefined[t]}" if t in undefined else "no relative change")
                for t in tasks if t not in changes}
    if not changes:
        return {"mean": None, "low": None, "high": None, "tasks": [], "left_out": left_out}
    names = sorted(changes)
    estimate = float(np.mean([changes[t]["estimate"] for t in names]))
    per_unit = None
    if all(changes[t]["per_unit"] is not None for t in names):
        units = set.intersection(*(set(changes[t]["per_unit"]) for t in names))
        per_unit = {u: float(np.mean([changes[t]["per_unit"][u] for t in names])) for u in units}
    replicates = None
    if all(changes[t]["replicates"] is not None for t in names):
        replicates = np.mean(np.stack([changes[t]["replicates"] for t in names]), axis=0)
    seed_variance = None
    if per_unit is None and all(changes[t]["seed_variance"] is not None for t in names):
        variances = [changes[t]["seed_variance"] for t in names]  # tasks treated as independent: conservative enough
        seed_variance = (sum(v for v, _ in variances) / len(names) ** 2, min(df for _, df in variances))
    interval = combined_interval(per_unit, replicates, estimate, split_of, overlap, confidence, seed_variance)
    out: dict[str, Any] = {"mean": estimate, "low": None, "high": None, "tasks": names, "left_out": left_out,
                           "confidence": confidence}
    if per_unit:
        out["per_unit"] = per_unit
    if interval is not None:
        out.update(low=interval.low, high=interval.high, p_value=interval.p_value, covers=interval.covers,
                   method=interval.method)
    return out


def load_compare(path: str | Path) -> dict[str, Any]:
    """Read a compare.json file (schema in the module docstring)."""
    return json.loads(Path(path).read_text())


def load_replicates(run_dir: str | Path, compare: Mapping[str, Any]) -> dict[tuple[str, str, str], np.ndarray]:
    """The bootstrap replicates every variant's cells saved (``<cell>/bootstrap.npz``), keyed (variant, unit, task)."""
    run_dir = Path(run_dir)
    cache: dict[str, dict[str, np.ndarray]] = {}
    out: dict[tuple[str, str, str], np.ndarray] = {}
    for name, variant in (compare.get("variants") or {}).items():
        for unit, by_task in (variant.get("cells") or {}).items():
            for task, cell in by_task.items():
                if cell not in cache:
                    path = run_dir / cell / "bootstrap.npz"
                    cache[cell] = {}
                    if path.is_file():
                        with np.load(path, allow_pickle=False) as stored:
                            cache[cell] = {str(t): stored["replicates"][i] for i, t in enumerate(stored["tasks"])}
                if task in cache[cell]:
                    out[(name, str(unit), task)] = cache[cell][task]
    return out


def analyze(compare: Mapping[str, Any], run_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """:func:`compare_variants` with the run's bootstrap replicates when ``run_dir`` has them."""
    replicates = load_replicates(run_dir, compare) if run_dir is not None else None
    return compare_variants(compare, replicates or None, **options)
