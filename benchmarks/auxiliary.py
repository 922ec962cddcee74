"""Does an auxiliary task help? The main tasks with vs without each auxiliary, over seeds, on real data sets.

Each data set runs through ``taskloom compare``'s own path (:func:`taskloom.train.grid.run_grid`):
single-task models, the multi-task model with its auxiliary task, and the same model trained
without it (the auxiliary ablation), all under one split, trunk, optimizer, epochs and batch,
on every seed. Per main task: the single-task, with and without means, the relative change of
with vs without and its 95 % interval over seeds and test rows (paired bootstrap), the verdict
(helps / hurts / no evidence), and the multi-task vs single-task verdict. Data sets:

- ``petrogold``: dependency relation labels (``deprel``, main) with universal POS tags
  (``upos``) as the auxiliary task, on a BiLSTM tagger (Søgaard & Goldberg 2016 supervise POS as
  a low-level auxiliary; here both heads sit on the top layer);
- ``adult``: income > 50K (main) with never-married as the auxiliary task, the task pair of
  MMoE (Ma et al. 2018), on an MLP;
- ``yeast``: gene-function labels class1-class5 (main) with the two most frequent labels,
  class12 and class13, as auxiliary tasks (so also "without both"), on an MLP;
- ``adult-builtin``: income (main) with the two built-in auxiliaries of ``auxiliaries:`` that need
  no labels: ``reconstruct`` (mask 0.25, a denoising reconstruction of the inputs, Vincent et al.
  2008) and ``feature`` (``age`` withheld from the inputs and predicted, Caruana 1997), each at a
  constant weight; Adult is written to a CSV (a seeded subset of adult.data and adult.test) and read
  as a ``table``, the data set kind feature auxiliaries need. Without ``feature`` the column stays
  withheld, so only the auxiliary loss differs;
- ``adult-weighted``: the same with the auxiliary losses weighted: gating ``weighted`` (Du et al.
  2018) on the feature auxiliary, a ``cosine`` schedule on reconstruct; ``weighting_effect`` then
  compares its full model with ``adult-builtin``'s, paired over seeds (same split and seeds);
- ``multimnist``: the left and right digits (main) with ``reconstruct`` (mask 0.25) of the image, on
  the LeNet trunk of Sener & Koltun 2018 (a seeded subset of composites).

Prints JSON. The default (3 seeds, small sizes, 1 thread, all six) took 294 s on 2 shared cores (adult-builtin 16 s,
adult-weighted 21 s, multimnist 69 s, petrogold 132 s); ``--datasets`` picks some:

    python benchmarks/auxiliary.py > /tmp/auxiliary.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from taskloom.config import Config, parse_config
from taskloom.data.datasets import load_dataset
from taskloom.train.grid import resolve_spec, run_grid


def petrogold_config(args: argparse.Namespace, output: Path) -> Config:
    """deprel (main) and upos (auxiliary) tagged by a BiLSTM; the tag counts come from the data."""
    options = {"max_sentences": args.sentences, "max_length": 60}
    tags = {t.name: t.num_outputs for t in load_dataset("petrogold", **options).tasks}
    trunk = {"embedding_dim": 48, "hidden_size": args.hidden, "num_layers": 1, "dropout": 0.25,
             "word_dropout": 0.05}
    return parse_config({
        "name": "auxiliary-petrogold",
        "data": {"dataset": "petrogold", "val_fraction": 0.1, "test_fraction": 0.2, "options": options},
        "tasks": [{"name": "deprel", "kind": "tagging", "target": "deprel", "num_outputs": tags["deprel"]},
                  {"name": "upos", "kind": "tagging", "target": "upos", "num_outputs": tags["upos"],
                   "role": "auxiliary"}],
        "model": {"trunk": {"name": "bilstm", "options": trunk}},
        "optimizer": {"name": "adamw", "lr": 0.003},
        "train": {"epochs": args.petrogold_epochs, "batch_size": 32, "num_threads": args.threads},
        "output_dir": str(output),
    })


def adult_config(args: argparse.Namespace, output: Path) -> Config:
    """income (main) and never_married (auxiliary) on an MLP, a seeded subset of the rows."""
    return parse_config({
        "name": "auxiliary-adult",
        "data": {"dataset": "adult", "options": {"size": args.rows}},
        "tasks": [{"name": "income", "kind": "binary", "target": "income"},
                  {"name": "never_married", "kind": "binary", "target": "never_married", "role": "auxiliary"}],
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [64, 32]}}},
        "optimizer": {"name": "adamw", "lr": 0.003},
        "train": {"epochs": args.adult_epochs, "batch_size": 128, "num_threads": args.threads},
        "output_dir": str(output),
    })


ADULT_WITHHELD = "age"


def adult_table(args: argparse.Namespace, output: Path) -> Path:
    """A CSV of Adult's feature columns and income: a seeded subset of ``args.rows`` rows of adult.data and
    adult.test together (the table is split like any table: train / validation / test)."""
    import numpy as np
    import pandas as pd

    from taskloom.data.datasets.adult import FEATURE_COLUMNS, adult_dir, read_adult

    directory = adult_dir()
    frame = pd.concat([read_adult(directory / "adult.data", skip_first=False),
                       read_adult(directory / "adult.test", skip_first=True)], ignore_index=True)
    rows = np.sort(np.random.default_rng(0).permutation(len(frame))[:args.rows])
    path = output / "adult.csv"
    output.mkdir(parents=True, exist_ok=True)
    frame.iloc[rows][[*FEATURE_COLUMNS, "income"]].to_csv(path, index=False)
    return path


def adult_builtin_config(args: argparse.Namespace, output: Path, weighted: bool = False) -> Config:
    """income (main) with reconstruct (mask 0.25) and feature (age) auxiliaries; ``weighted``: gated / cosine."""
    feature = {"kind": "feature", "column": ADULT_WITHHELD, "task_kind": "regression"}
    reconstruct = {"kind": "reconstruct", "mask": 0.25, "seed": 0}
    if weighted:
        feature["gating"] = "weighted"
        reconstruct["schedule"] = "cosine"
    return parse_config({
        "name": "auxiliary-adult-weighted" if weighted else "auxiliary-adult-builtin",
        "data": {"dataset": "table", "options": {"path": str(adult_table(args, output))}},
        "tasks": [{"name": "income", "kind": "binary", "target": "income"}],
        "auxiliaries": [reconstruct, feature],
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [64, 32]}}},
        "optimizer": {"name": "adamw", "lr": 0.003},
        "train": {"epochs": args.adult_epochs, "batch_size": 128, "num_threads": args.threads},
        "output_dir": str(output),
    })


def multimnist_config(args: argparse.Namespace, output: Path) -> Config:
    """left and right digits (main) with a masked reconstruction of the image as the auxiliary task."""
    return parse_config({
        "name": "auxiliary-multimnist",
        "data": {"dataset": "multimnist", "options": {"size": args.images}},
        "auxiliaries": [{"kind": "reconstruct", "mask": 0.25, "seed": 0}],
        "model": {"trunk": {"name": "lenet"}},
        "optimizer": {"name": "adamw", "lr": 0.001},
        "train": {"epochs": args.multimnist_epochs, "batch_size": 128, "num_threads": args.threads},
        "output_dir": str(output),
    })


def adult_weighted_config(args: argparse.Namespace, output: Path) -> Config:
    return adult_builtin_config(args, output, weighted=True)


YEAST_MAIN = ("class1", "class2", "class3", "class4", "class5")
YEAST_AUXILIARY = ("class12", "class13")


def yeast_config(args: argparse.Namespace, output: Path) -> Config:
    """Five main labels and two auxiliary labels of Yeast on an MLP."""
    tasks = [{"name": n, "kind": "binary", "target": n} for n in YEAST_MAIN]
    tasks += [{"name": n, "kind": "binary", "target": n, "role": "auxiliary"} for n in YEAST_AUXILIARY]
    return parse_config({
        "name": "auxiliary-yeast",
        "data": {"dataset": "yeast"},
        "tasks": tasks,
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [64]}}},
        "optimizer": {"name": "adamw", "lr": 0.003},
        "train": {"epochs": args.yeast_epochs, "batch_size": 64, "num_threads": args.threads},
        "output_dir": str(output),
    })


CONFIGS = {"petrogold": petrogold_config, "adult": adult_config, "yeast": yeast_config,
           "adult-builtin": adult_builtin_config, "adult-weighted": adult_weighted_config,
           "multimnist": multimnist_config}


def weighting_effect(constant: dict[str, Any], weighted: dict[str, Any]) -> dict[str, Any]:
    """The full models' main metric, weighted minus constant auxiliary weights, per seed and its mean with a
    95 % t interval over the seeds (same split and seeds; the test rows' noise is not covered: it is paired)."""
    from scipy import stats

    out: dict[str, Any] = {}
    for task, spec in constant["tasks"].items():
        if spec.get("role") == "auxiliary":
            continue
        name = next(iter(v for v, e in constant["variants"].items() if e.get("kind") == "multi"))
        first = constant["variants"][name]["values"]
        second = weighted["variants"][name]["values"]
        differences = [second[u][task] - first[u][task] for u in first if u in second]
        mean = sum(differences) / len(differences)
        half = None
        if len(differences) > 1:
            sd = float(stats.tstd(differences))
            half = float(stats.t.ppf(0.975, len(differences) - 1)) * sd / len(differences) ** 0.5
        out[task] = {"metric": spec["metric"], "higher_is_better": spec["higher_is_better"],
                     "constant": sum(first[u][task] for u in first) / len(first),
                     "weighted": sum(second[u][task] for u in second) / len(second),
                     "differences": differences, "mean_difference": mean,
                     "low": None if half is None else mean - half, "high": None if half is None else mean + half,
                     "covers": "seeds only"}
    return out


def summarize(compare: dict[str, Any]) -> dict[str, Any]:
    """Per main task: single, with, without; with vs without and multi vs single, each with interval and verdict."""
    analysis = compare["analysis"]
    single = analysis["variants"].get("single", {}).get("tasks", {})
    out: dict[str, Any] = {"seeds": compare["seeds"], "split_sizes": compare["split_sizes"], "auxiliary": []}
    for effect in analysis.get("auxiliary", []):
        full = analysis["variants"][effect["reference"]]
        tasks = {}
        for task, row in effect["tasks"].items():
            against_single = full["tasks"][task]
            tasks[task] = {
                "metric": row.get("metric"), "single": single.get(task, {}).get("mean"),
                "with": row.get("with"), "without": row.get("without"), "difference": row.get("difference"),
                "change_pct": row.get("relative_change"), "low_pct": row.get("low"), "high_pct": row.get("high"),
                "verdict": row.get("verdict"), "covers": row.get("covers"),
                "with_vs_single": {"change_pct": against_single.get("relative_change"),
                                   "low_pct": against_single.get("low"), "high_pct": against_single.get("high"),
                                   "verdict": against_single.get("verdict")},
            }
        dm = effect["delta_m"]
        out["auxiliary"].append({"auxiliary": effect["auxiliary"], "with": effect["reference"],
                                 "without": effect["variant"], "tasks": tasks,
                                 "delta_m": {"mean": dm.get("mean"), "low": dm.get("low"), "high": dm.get("high"),
                                             "verdict": dm.get("verdict")}})
    out["train_seconds"] = {name: sum(v["train_seconds"].values()) for name, v in compare["variants"].items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(CONFIGS),
                        default=["petrogold", "adult", "yeast", "adult-builtin", "adult-weighted", "multimnist"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=3000, help="PetroGold: read only the first sentences")
    parser.add_argument("--hidden", type=int, default=64, help="PetroGold: BiLSTM hidden size")
    parser.add_argument("--petrogold-epochs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20000, help="Adult: a seeded subset of this many rows")
    parser.add_argument("--adult-epochs", type=int, default=10)
    parser.add_argument("--yeast-epochs", type=int, default=20)
    parser.add_argument("--images", type=int, default=6000, help="MultiMNIST: composites in all splits")
    parser.add_argument("--multimnist-epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, help="where the run directories go (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    logging.getLogger("taskloom").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as temporary:
        output = args.output or Path(temporary)
        compares = {}
        for name in args.datasets:
            begun = time.perf_counter()
            config = CONFIGS[name](args, output / name)
            compares[name] = run_grid(config, resolve_spec(config, seeds=args.seeds))
            results[name] = {**summarize(compares[name]), "seconds": time.perf_counter() - begun}
            logging.info("%s: %s", name, json.dumps(results[name]["auxiliary"]))
        if "adult-builtin" in compares and "adult-weighted" in compares:
            results["weighting_effect"] = weighting_effect(compares["adult-builtin"], compares["adult-weighted"])
    print(json.dumps({"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                      "results": results, "seconds": time.perf_counter() - started}, indent=2))


if __name__ == "__main__":
    main()
