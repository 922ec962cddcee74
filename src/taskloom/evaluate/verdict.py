"""Does multi-task training help? Per-task verdicts over seeds against single-task baselines.

Verdict rule (per task, on the main metric, signed so that positive means better):
  * seeds pair up (both sides have the same n >= 2 seeds): paired t-test on the per-seed
    differences (``scipy.stats.ttest_rel``); otherwise, with n >= 2 on each side, Welch's
    t-test (``ttest_ind(equal_var=False)``). p < ``alpha`` (0.05) gives "helps" or "hurts"
    by the sign of the mean difference, else "within noise". Zero spread with a nonzero
    difference counts as significant; identical values are "within noise".
  * a single seed on either side: "within noise (one seed)" unless the relative change of
    the means exceeds ``one_seed_threshold`` percent (5%), then "helps"/"hurts" with the
    reason saying so.
Delta-m % (Maninis et al. 2019) is computed per seed (paired seeds; else against the
baseline mean) with a Student t-interval over seeds.

``compare.json`` schema (written by ``taskloom compare``, read by :func:`compare_variants`)::

    {
      "dataset": "adult",
      "tasks": {"income": {"metric": "auroc", "higher_is_better": true}, ...},
      "baseline": "single",                       # the variant every other is compared with
      "variants": {
        "single": {
          "kind": "single",                       # "single": one model per task; "multi"; "groups"
          "values": {"0": {"income": 0.90, "sex": 0.81}, "1": {...}},   # seed -> task -> main metric
          "parameters": 12345,                    # optional: total over the models of the variant
          "train_seconds": {"0": 12.5, "1": 12.1},# optional: per seed, total over its models
          "inference_seconds": 0.02               # optional: one pass over the test split
        },
        "hard+pcgrad": {"kind": "multi", "architecture": "hard", "balancing": "pcgrad",
                        "values": {...}, ...},
        "groups": {"kind": "groups", "groups": [["a", "b"], ["c"]], "values": {...}}
      }
    }

Seeds are JSON object keys (strings); a null value means the metric was not defined.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from taskloom.evaluate.delta import delta_m, relative_change

HELPS, HURTS, NOISE, NOISE_ONE_SEED = "helps", "hurts", "within noise", "within noise (one seed)"


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
    one_seed_threshold: float = 5.0,
) -> TaskVerdict:
    """Helps / hurts / within noise for one task by the rule in the module docstring."""
    if not variant or not baseline:
        raise ValueError("a verdict needs at least one value for the variant and for the baseline")
    sign = 1.0 if higher_is_better else -1.0
    v, b = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    n_v, n_b = len(v), len(b)
    if n_v < 2 or n_b < 2:
        change = relative_change(float(v.mean()), float(b.mean()), higher_is_better) if b.mean() != 0 else 0.0
        if abs(change) > one_seed_threshold:
            verdict = HELPS if change > 0 else HURTS
            return TaskVerdict(verdict, f"one seed: relative change {change:+.2f}% beyond +-{one_seed_threshold:g}%",
                               None, n_v, n_b)
        return TaskVerdict(NOISE_ONE_SEED, f"one seed: relative change {change:+.2f}% within "
                                           f"+-{one_seed_threshold:g}%", None, n_v, n_b)
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
        raise ValueError(f"compare.json: variant {name!r} has no 'values' (seed -> task -> metric)")
    return {str(seed): dict(row) for seed, row in values.items()}


def compare_variants(
    compare: Mapping[str, Any],
    alpha: float = 0.05,
    one_seed_threshold: float = 5.0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Per variant: per-task mean/std, relative change, verdict; delta-m % per seed with a t-interval.

    ``compare`` follows the schema in the module docstring. Returns
    ``{"baseline": name, "variants": {name: {"tasks": {task: {...}}, "delta_m": {...}}}}``.
    """
    tasks = compare.get("tasks")
    variants = compare.get("variants")
    if not isinstance(tasks, Mapping) or not isinstance(variants, Mapping):
        raise ValueError("compare.json needs 'tasks' and 'variants' objects (see taskloom.evaluate.verdict)")
    baseline_name = compare.get("baseline", "single")
    if baseline_name not in variants:
        raise ValueError(f"compare.json: baseline variant {baseline_name!r} is not among {sorted(variants)}")
    hib = {t: bool(spec["higher_is_better"]) for t, spec in tasks.items()}
    base_values = _values(variants[baseline_name], baseline_name)
    out: dict[str, Any] = {"baseline": baseline_name, "alpha": alpha, "variants": {}}
    for name, variant in variants.items():
        values = _values(variant, name)
        paired_seeds = sorted(set(values) & set(base_values))
        paired = len(paired_seeds) == len(values) == len(base_values)
        rows: dict[str, Any] = {}
        for task in tasks:
            ours = [row[task] for row in values.values() if row.get(task) is not None]
            theirs = [row[task] for row in base_values.values() if row.get(task) is not None]
            if not ours or not theirs:
                rows[task] = {"metric": tasks[task].get("metric"), "note": "no value on one side"}
                continue
            mean, std = mean_std(ours)
            base_mean, base_std = mean_std(theirs)
            row: dict[str, Any] = {"metric": tasks[task].get("metric"), "higher_is_better": hib[task],
                                   "mean": mean, "std": std, "baseline_mean": base_mean, "baseline_std": base_std,
                                   "n": len(ours)}
            row["relative_change"] = relative_change(mean, base_mean, hib[task]) if base_mean != 0 else None
            if name != baseline_name:
                both = paired and all(values[s].get(task) is not None and base_values[s].get(task) is not None
                                      for s in paired_seeds)
                if both:
                    ours = [values[s][task] for s in paired_seeds]
                    theirs = [base_values[s][task] for s in paired_seeds]
                row.update(asdict(task_verdict(ours, theirs, hib[task], both, alpha, one_seed_threshold)))
            rows[task] = row
        out["variants"][name] = {"kind": variant.get("kind"), "tasks": rows,
                                 "delta_m": None if name == baseline_name else
                                 _delta_m_over_seeds(values, base_values, hib, paired, confidence)}
        for key in ("parameters", "train_seconds", "inference_seconds", "groups", "architecture", "balancing"):
            if key in variant:
                out["variants"][name][key] = variant[key]
    return out


def _delta_m_over_seeds(
    values: Mapping[str, Mapping[str, float | None]],
    base_values: Mapping[str, Mapping[str, float | None]],
    hib: Mapping[str, bool],
    paired: bool,
    confidence: float,
) -> dict[str, Any]:
    base_mean = {}
    for task in hib:
        known = [row[task] for row in base_values.values() if row.get(task) is not None]
        if known and float(np.mean(known)) != 0:
            base_mean[task] = float(np.mean(known))
    per_seed: dict[str, float] = {}
    for seed, row in values.items():
        if paired:
            base = {t: base_values[seed][t] for t in hib
                    if base_values[seed].get(t) not in (None, 0) and row.get(t) is not None}
        else:
            base = {t: m for t, m in base_mean.items() if row.get(t) is not None}
        if base:
            per_seed[seed] = delta_m(row, base, {t: hib[t] for t in base})
    if not per_seed:
        return {"per_seed": {}, "mean": None, "low": None, "high": None, "paired": paired}
    mean, low, high = t_interval(list(per_seed.values()), confidence)
    return {"per_seed": per_seed, "mean": mean, "low": low, "high": high, "confidence": confidence, "paired": paired}


def load_compare(path: str | Path) -> dict[str, Any]:
    """Read a compare.json file (schema in the module docstring)."""
    return json.loads(Path(path).read_text())


def verdicts_from_comparison(comparison: Mapping[str, Any], one_seed_threshold: float = 5.0) -> dict[str, TaskVerdict]:
    """One-seed verdicts for a single run's comparison.json (single vs multi per task)."""
    out = {}
    for task, row in comparison.get("tasks", {}).items():
        if row.get("single") is None or row.get("multi") is None:
            continue
        out[task] = task_verdict([row["multi"]], [row["single"]], bool(row["higher_is_better"]),
                                 one_seed_threshold=one_seed_threshold)
    return out
