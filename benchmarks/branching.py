"""Branching (Lu et al. 2017) on two groups of related synthetic tasks, against hard sharing and single-task models.

The data: Ma et al. 2018's generator with ``groups: 2``: y1, y2 share one direction (cosine
``correlation``), y3, y4 another orthogonal to it, so the true grouping is {y1, y2} | {y3, y4}. For each
seed, branching, hard sharing (the same MLP trunk and heads) and one single-task model per task
(trunk + head) are trained for the same epochs, batch, optimizer and split, and scored on the test
split at the last epoch. The affinity signal of Lu et al. is strongest early in training (later, the
residual errors look alike for every pair of tasks), hence the early first split. Prints JSON: the grouping branching chose at each split, parameter counts,
and per-task test MSE (mean and standard deviation over seeds).

    python benchmarks/branching.py --seeds 0 1 2 > /tmp/branching.json
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from typing import Any

import torch

from taskloom.data.datasets.synthetic import load_synthetic
from taskloom.sharing import build_branching, build_hard, count_parameters
from taskloom.train.trainer import Trainer
from taskloom.trunks import MLP


def train_and_test(model: torch.nn.Module, tasks: list, data: Any, args: argparse.Namespace,
                   seed: int) -> dict[str, float]:
    trainer = Trainer(model, tasks, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed)
    trainer.fit(data.train, data.val)
    results = trainer.evaluate(data.test)
    return {task.name: results[task.name]["mse"] for task in tasks}


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    data = load_synthetic(n=args.n, val_fraction=args.val_fraction, d=args.d, num_tasks=4, groups=2, correlation=args.correlation, seed=seed)
    hidden = tuple(args.hidden)

    def trunk() -> MLP:
        return MLP(args.d, hidden)

    out: dict[str, Any] = {"seed": seed}
    torch.manual_seed(seed)
    branching = build_branching(trunk, data.tasks, alpha=args.alpha, max_branches=2, split_every=args.split_every,
                                affinity=args.affinity)
    out["branching_mse"] = train_and_test(branching, data.tasks, data, args, seed)
    out["splits"] = [{"epoch": s["epoch"], "layer": s["layer"], "groups": s["groups"]}
                     for s in branching.structure()["splits"]]
    out["branching_parameters"] = count_parameters(branching)
    torch.manual_seed(seed)
    hard = build_hard(trunk, data.tasks)
    out["hard_mse"] = train_and_test(hard, data.tasks, data, args, seed)
    out["hard_parameters"] = count_parameters(hard)
    out["single_mse"], out["single_parameters"] = {}, 0
    for task in data.tasks:
        torch.manual_seed(seed)
        single = build_hard(trunk, [task])
        out["single_mse"].update(train_and_test(single, [task], data, args, seed))
        out["single_parameters"] += count_parameters(single)
    return out


def summary(runs: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    tasks = list(runs[0][key])
    table = {}
    for task in tasks + ["mean"]:
        values = [statistics.fmean(r[key].values()) if task == "mean" else r[key][task] for r in runs]
        table[task] = {"mean": statistics.fmean(values),
                       "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--val-fraction", type=float, default=0.2, help="the affinity is measured on validation")
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--correlation", type=float, default=0.9)
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 32])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--split-every", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--affinity", choices=["lu", "tag"], default="lu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    runs = [run_seed(seed, args) for seed in args.seeds]
    first = [r["splits"][0]["groups"] if r["splits"] else None for r in runs]
    report = {
        "settings": vars(args),
        "true_groups": [["y1", "y2"], ["y3", "y4"]],
        "first_split_groups": first,
        "recovered": sum(g == [["y1", "y2"], ["y3", "y4"]] for g in first),
        "parameters": {"branching": [r["branching_parameters"] for r in runs], "hard": runs[0]["hard_parameters"],
                       "single_task_total": runs[0]["single_parameters"]},
        "test_mse": {"branching": summary(runs, "branching_mse"), "hard": summary(runs, "hard_mse"),
                     "single_task": summary(runs, "single_mse")},
        "runs": runs,
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
