"""Single-task vs hard sharing + equal weights on MultiMNIST / Multi-Fashion built from the full 60k/10k images.

Needs ``make data`` (the files under ``$TASKLOOM_DATA``, default ``./.data``). LeNet trunk, AdamW,
one seed; each task's test accuracy at the last epoch. Published orientation: joint training about
0.90/0.90 on MultiMNIST (Sener & Koltun 2018). Prints JSON.

    python benchmarks/full_mnist.py --dataset multimnist --epochs 3 > /tmp/full_mnist.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from taskloom.config import parse_config
from taskloom.train.runner import build_trainer, load_data


def config_for(dataset: str, seed: int, epochs: int, size: int | None) -> Any:
    options: dict[str, Any] = {} if dataset == "multifashion" else {"source": "npm"}
    if size is not None:
        options["size"] = size
    return parse_config({
        "name": f"full-{dataset}",
        "data": {"dataset": dataset, "split_seed": seed, "options": options},
        "model": {"architecture": "hard", "trunk": {"name": "lenet"}},
        "balancing": {"method": "equal"},
        "optimizer": {"name": "adamw", "lr": 0.002},
        "train": {"batch_size": 256, "epochs": epochs, "seed": seed},
    })


def train_and_test(config: Any, tasks: list, splits: Any, multitask: bool) -> dict[str, Any]:
    trainer = build_trainer(config, tasks, splits, None, balancing=multitask)
    started = time.perf_counter()
    trainer.fit(splits.train)
    seconds = time.perf_counter() - started
    test = trainer.evaluate(splits.test)
    return {"test": {t.name: test[t.name][t.main_metric] for t in tasks}, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["multimnist", "multifashion"], default="multimnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=None, help="total composites (default: one per source image)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = config_for(args.dataset, args.seed, args.epochs, args.size)
    splits = load_data(config)
    tasks = list(splits.tasks)
    result: dict[str, Any] = {"dataset": args.dataset, "epochs": args.epochs, "seed": args.seed,
                              "sizes": splits.info["sizes"], "single_task": {}}
    for task in tasks:
        result["single_task"][task.name] = train_and_test(config, [task], splits, multitask=False)
    result["hard_equal"] = train_and_test(config, tasks, splits, multitask=True)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
