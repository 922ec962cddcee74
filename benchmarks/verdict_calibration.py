"""Calibration of taskloom's verdicts by simulation: false-verdict rates of A/A comparisons, and power.

Prints JSON. For each data set and repetition, two arms of the same model are trained with
disjoint seeds (3 each by default) on one split, and every task's verdict is taken
  * "before": the seed-only paired t-test over seeds (what ``compare`` did until now);
  * "after": the interval over seeds and test rows (``taskloom.evaluate.verdict``).
Scenarios:
  * ``aa``: both arms identical (the issue's A/A). Any helps/hurts is false.
  * ``aa_halves``: both arms identical in distribution, but arm A always trains on one fixed half of
    the training rows and arm B on the other half. Their population performance is equal by
    symmetry, yet on a fixed test set their difference is not zero: this is the test set's own
    sampling noise, which a seed-only test cannot see. Any helps/hurts is false.
  * ``power`` (or ``power:F``): arm B trains on every training row, arm A on a fraction F of them
    (default 0.25; a known gain for B, smaller as F grows). The rate of "helps" is the power.
Rates come with Clopper-Pearson 95% intervals. Run: python benchmarks/verdict_calibration.py --reps 20
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import numpy as np
import torch
from scipy import stats

from taskloom.config import parse_config
from taskloom.evaluate.evaluator import collect_outputs, metrics_from_outputs
from taskloom.evaluate.resampling import REPLICATES, TaskOutputs, replicate_metric, row_counts
from taskloom.evaluate.verdict import compare_variants
from taskloom.train.runner import build_trainer, load_data

DATASETS = {
    "synthetic": {"data": {"dataset": "synthetic", "options": {"n": 3000, "d": 20, "num_tasks": 2,
                                                                "correlation": 0.5}},
                  "model": {"trunk": {"name": "mlp", "options": {"hidden": [32]}}},
                  "optimizer": {"lr": 0.003}, "train": {"epochs": 10, "batch_size": 128}},
    "adult": {"data": {"dataset": "adult", "options": {"size": 6000}},
              "model": {"trunk": {"name": "mlp", "options": {"hidden": [32]}}},
              "optimizer": {"lr": 0.002}, "train": {"epochs": 4, "batch_size": 256}},
    "yeast": {"data": {"dataset": "yeast"},
              "model": {"trunk": {"name": "mlp", "options": {"hidden": [64]}}},
              "optimizer": {"lr": 0.002}, "train": {"epochs": 8, "batch_size": 64}},
}


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    alpha = 1 - confidence
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def train_arm(config: Any, splits: Any, seeds: list[int], rows: np.ndarray | None,
              counts: np.ndarray) -> tuple[dict[str, dict[str, float]], dict[tuple[str, str], np.ndarray]]:
    """Per seed: each task's main test metric, and its replicates on the split's bootstrap counts."""
    values: dict[str, dict[str, float]] = {}
    replicates: dict[tuple[str, str], np.ndarray] = {}
    train = splits.train if rows is None else splits.train.subset(torch.as_tensor(rows))
    for seed in seeds:
        raw = config.model_dump()
        raw["train"]["seed"] = seed
        trainer = build_trainer(parse_config(raw), splits.tasks, splits, None)
        trainer.fit(train, splits.val)
        collected = collect_outputs(trainer.model, splits.test, splits.tasks, 1024, trainer.device)
        test = metrics_from_outputs(collected, splits.tasks)
        values[str(seed)] = {t.name: test[t.name].get(t.main_metric) for t in splits.tasks}
        for task in splits.tasks:
            part = collected[task.name]
            data = TaskOutputs(part["output"].numpy(), part["target"].numpy(), part["row"].numpy())
            replicates[(str(seed), task.name)] = replicate_metric(task, task.main_metric, data, counts)
    return values, replicates


def verdicts(splits: Any, arm_a: tuple, arm_b: tuple, seeds_a: list[int], seeds_b: list[int]) -> dict[str, Any]:
    """Verdicts of B against A per task, after (intervals) and before (seed-only t-test), pairing seeds in order."""
    rename = {str(b): str(a) for a, b in zip(seeds_a, seeds_b)}  # pair the i-th seeds, as units
    compare = {
        "tasks": {t.name: {"metric": t.main_metric, "higher_is_better": t.higher_is_better} for t in splits.tasks},
        "baseline": "A",
        "variants": {"A": {"kind": "single", "values": arm_a[0]},
                     "B": {"kind": "multi", "values": {rename[u]: v for u, v in arm_b[0].items()}}},
    }
    replicates = {("A", u, t): r for (u, t), r in arm_a[1].items()}
    replicates.update({("B", rename[u], t): r for (u, t), r in arm_b[1].items()})
    result = compare_variants(compare, replicates)["variants"]["B"]
    out = {}
    for task, row in result["tasks"].items():
        out[task] = {"after": row.get("verdict"), "before": (row.get("seed_only") or {}).get("verdict"),
                     "change": row.get("relative_change"), "low": row.get("low"), "high": row.get("high")}
    dm = result["delta_m"]
    out["delta_m"] = {"after": "helps" if (dm.get("low") or 0) > 0 else "hurts" if (dm.get("high") or 0) < 0
                      else "within noise", "change": dm.get("mean"), "low": dm.get("low"), "high": dm.get("high")}
    return out


def summarize(records: list[dict[str, Any]], want: str | None) -> dict[str, Any]:
    """Per rule: the rate of helps/hurts over every task comparison (``want``: count only that verdict)."""
    out = {}
    for rule in ("before", "after"):
        calls = [v[rule] for r in records for task, v in r.items() if task != "delta_m" and rule in v]
        hits = sum(c == want if want else c in ("helps", "hurts") for c in calls)
        low, high = clopper_pearson(hits, len(calls))
        out[rule] = {"rate": hits / max(1, len(calls)), "count": hits, "comparisons": len(calls),
                     "interval95": [low, high]}
    deltas = [r["delta_m"]["after"] for r in records]
    hits = sum(d == want if want else d in ("helps", "hurts") for d in deltas)
    out["delta_m_after"] = {"rate": hits / max(1, len(deltas)), "count": hits, "comparisons": len(deltas),
                            "interval95": list(clopper_pearson(hits, len(deltas)))}
    return out


def run(dataset: str, scenario: str, reps: int, seeds: int, epochs: int | None) -> dict[str, Any]:
    raw = {"name": f"calibration-{dataset}", **json.loads(json.dumps(DATASETS[dataset]))}
    raw["train"]["num_threads"] = 1
    if epochs:
        raw["train"]["epochs"] = epochs
    config = parse_config(raw)
    splits = load_data(config)
    counts = row_counts(len(splits.test), REPLICATES, 0)
    rng = np.random.default_rng(7)
    records = []
    started = time.perf_counter()
    for rep in range(reps):
        seeds_a = [1000 + 2 * seeds * rep + i for i in range(seeds)]
        seeds_b = [s + seeds for s in seeds_a]
        rows_a = rows_b = None
        if scenario == "aa_halves":
            order = rng.permutation(len(splits.train))
            rows_a, rows_b = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2:])
        elif scenario.startswith("power"):
            fraction = float(scenario.split(":")[1]) if ":" in scenario else 0.25
            rows_a = np.sort(rng.permutation(len(splits.train))[: int(len(splits.train) * fraction)])
        arm_a = train_arm(config, splits, seeds_a, rows_a, counts)
        arm_b = train_arm(config, splits, seeds_b, rows_b, counts)
        records.append(verdicts(splits, arm_a, arm_b, seeds_a, seeds_b))
        logging.info("%s %s rep %d/%d: %s", dataset, scenario, rep + 1, reps,
                     {t: (v["before"], v["after"]) for t, v in records[-1].items() if t != "delta_m"})
    return {"dataset": dataset, "scenario": scenario, "reps": reps, "seeds_per_arm": seeds,
            "tasks": [t.name for t in splits.tasks], "test_rows": len(splits.test),
            "seconds": time.perf_counter() - started,
            "false_verdicts" if not scenario.startswith("power") else "power":
                summarize(records, None if not scenario.startswith("power") else "helps"),
            "records": records}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="synthetic,adult,yeast")
    parser.add_argument("--scenarios", default="aa,aa_halves,power,power:0.6")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--power-datasets", default="synthetic,adult")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("taskloom").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    results = []
    for scenario in args.scenarios.split(","):
        names = args.power_datasets if scenario.startswith("power") else args.datasets
        for dataset in names.split(","):
            results.append(run(dataset, scenario, args.reps, args.seeds, args.epochs))
    text = json.dumps({"alpha": 0.05, "results": results}, indent=1)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
