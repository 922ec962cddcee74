"""PetroGold token tagging: single-task taggers, hard sharing, low-level supervision and the cascade.

Tasks UPOS, morphological features (the whole feature string as one tag) and dependency
relation label, on a stacked BiLSTM trunk. The models, all under the same trunk, optimizer,
epochs, batch, data split and seed:

- ``single``: one trunk + head per task;
- ``hard``: all three heads on the top layer (Caruana 1997);
- ``low_level``: the UPOS head on the first BiLSTM layer, the others on the top
  (Søgaard & Goldberg 2016);
- ``cascade``: UPOS on the first layer, then feats and deprel on the top, each reading the
  lower tasks' label embeddings (Hashimoto et al. 2017).

Token accuracy on the test split after the last epoch, mean and std over seeds. The papers'
claim (supervising the low-level task lower helps the higher ones) is tested in ``claim``: per
seed, the paired differences low_level - hard and cascade - hard in feats and deprel accuracy,
with their mean, sd, the seeds where the difference is positive and a paired t statistic. Prints JSON.

    python benchmarks/petrogold.py > /tmp/petrogold.json
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from typing import Any

import torch

from taskloom.config import parse_config
from taskloom.sharing import count_parameters
from taskloom.train.runner import build_trainer, load_data

TASKS = ("upos", "feats", "deprel")


def models() -> dict[str, tuple[str, dict[str, Any]]]:
    """Architecture and options of each multi-task model (UPOS tapped at layer 1 where it is lower)."""
    return {
        "hard": ("hard", {}),
        "low_level": ("low_level", {"depths": {"upos": 1}}),
        "cascade": ("cascade", {"order": list(TASKS), "depths": {"upos": 1}, "embedding_dim": 32}),
    }


def config_for(architecture: str, options: dict[str, Any], seed: int, args: argparse.Namespace) -> Any:
    trunk = {"embedding_dim": args.embedding_dim, "hidden_size": args.hidden, "num_layers": args.layers,
             "dropout": 0.25, "word_dropout": 0.05}
    return parse_config({
        "name": f"petrogold-{architecture}",
        "data": {"dataset": "petrogold", "val_fraction": 0.1, "test_fraction": 0.1,
                 "options": {"max_length": args.max_length, "max_sentences": args.max_sentences}},
        "model": {"architecture": architecture, "options": options, "trunk": {"name": "bilstm", "options": trunk}},
        "balancing": {"method": "equal"},
        "optimizer": {"name": "adamw", "lr": args.lr},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": seed},
    })


def train_and_test(config: Any, tasks: list, splits: Any, multitask: bool) -> dict[str, Any]:
    trainer = build_trainer(config, tasks, splits, None, balancing=multitask)
    started = time.perf_counter()
    trainer.fit(splits.train)
    seconds = time.perf_counter() - started
    test = trainer.evaluate(splits.test)
    return {"test": {t.name: test[t.name]["accuracy"] for t in tasks}, "parameters": count_parameters(trainer.model),
            "seconds": seconds}


def summary(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


HIGHER_TASKS = ("feats", "deprel")


def claim_test(runs: dict[str, list[dict[str, Any]]], seeds: list[int]) -> dict[str, Any]:
    """Paired per-seed differences (model - hard) in the higher tasks' test accuracy, for low_level and cascade."""
    out: dict[str, Any] = {"question": "does supervising UPOS at a lower layer help feats and deprel?",
                           "difference": "accuracy of the model minus that of hard sharing, same seed (paired)"}
    if "hard" not in runs:
        return {**out, "note": "hard sharing was not run; no paired differences"}
    for name in ("low_level", "cascade"):
        if name not in runs:
            continue
        for task in HIGHER_TASKS:
            values = [r["test"][task] - h["test"][task] for r, h in zip(runs[name], runs["hard"])]
            mean = statistics.fmean(values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            t = mean / (sd / math.sqrt(len(values))) if len(values) > 1 and sd > 0 else None
            out[f"{name}-hard/{task}"] = {"seeds": seeds[: len(values)], "values": values, "mean": mean, "sd": sd,
                                          "positive_seeds": sum(v > 0 for v in values), "paired_t": t}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=100, help="cuts training sentences only")
    parser.add_argument("--max-sentences", type=int, default=None, help="read only the first sentences (smoke runs)")
    parser.add_argument("--models", nargs="+", default=["single", "hard", "low_level", "cascade"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    logging.getLogger("taskloom").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    splits = load_data(config_for("hard", {}, args.seeds[0], args))
    tasks = [t for t in splits.tasks if t.name in TASKS]
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in args.seeds:
        if "single" in args.models:
            for task in tasks:
                result = train_and_test(config_for("hard", {}, seed, args), [task], splits, multitask=False)
                runs.setdefault("single", []).append(result)
                logging.info("seed %d single %s: %s (%.0f s)", seed, task.name, result["test"], result["seconds"])
        for name, (architecture, options) in models().items():
            if name in args.models:
                result = train_and_test(config_for(architecture, options, seed, args), tasks, splits, multitask=True)
                runs.setdefault(name, []).append(result)
                logging.info("seed %d %s: %s (%.0f s)", seed, name, result["test"], result["seconds"])
    results: dict[str, Any] = {}
    for name, rows in runs.items():
        if name == "single":
            merged = {t.name: [r["test"][t.name] for r in rows if t.name in r["test"]] for t in tasks}
            parameters = sum(r["parameters"] for r in rows[: len(tasks)])
        else:
            merged = {t.name: [r["test"][t.name] for r in rows] for t in tasks}
            parameters = rows[0]["parameters"]
        results[name] = {"accuracy": {n: summary(v) for n, v in merged.items()}, "parameters": parameters,
                         "options": models().get(name, ("hard", {}))[1],
                         "seconds": sum(r["seconds"] for r in rows)}
    print(json.dumps({
        "settings": {k: v for k, v in vars(args).items() if k != "models"},
        "split_sentences": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "tokens": splits.info["tokens"],
        "tag_counts": splits.info["tag_counts"],
        "results": results,
        "claim": claim_test(runs, args.seeds),
        "seconds": time.perf_counter() - started,
    }, indent=2))


if __name__ == "__main__":
    main()
