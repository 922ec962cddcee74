"""A small but real run directory for report tests: tiny models trained on generated data.

It writes the files the trainer writes (config.yaml, metrics.jsonl, comparison.json) and a
compare.json grid over two variants and two seeds, with conflict and affinity logged.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from synthetic_tasks import make_three_task_data
from taskloom import BatchLoader, MultiTaskModel, task_losses
from taskloom.evaluate.affinity import AffinityTracker
from taskloom.evaluate.conflict import ConflictTracker
from taskloom.evaluate.delta import delta_m, relative_change
from taskloom.evaluate.evaluator import evaluate_model

CONFIG = """name: report-fixture
data:
  dataset: synthetic-three
  val_fraction: 0.2
  test_fraction: 0.2
model:
  architecture: hard
  trunk: mlp
  hidden: [16]
balancing:
  method: dwa
train:
  epochs: 5
  batch_size: 64
  lr: 0.01
  baselines: true
"""


def _trunk() -> nn.Module:
    trunk = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    trunk.out_features = 16
    return trunk


def _train(tasks, splits, name: str, seed: int, epochs: int, dwa: bool,
           log_analysis: bool) -> tuple[list, dict, float, int]:
    torch.manual_seed(seed)
    model = MultiTaskModel(_trunk(), tasks=tasks)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    names = [t.name for t in tasks]
    task_map = {t.name: t for t in tasks}
    history: list[dict[str, float]] = []
    records = []
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        if dwa and len(history) >= 2:
            ratios = torch.tensor([history[-1][n] / history[-2][n] for n in names]) / 2.0
            weights = dict(zip(names, (len(names) * torch.softmax(ratios, 0)).tolist()))
        else:
            weights = {n: 1.0 for n in names}
        affinity, conflict = AffinityTracker(names), ConflictTracker(names)
        sums = {n: 0.0 for n in names}
        loader = BatchLoader(splits["train"], 64, seed=seed)
        loader.set_epoch(epoch)
        for step, batch in enumerate(loader):
            losses = task_losses(model(batch.inputs), batch, task_map)
            if log_analysis and len(names) > 1 and step % 2 == 0:
                conflict.measure(model, losses)
                affinity.measure(model, batch, task_map, lr=0.01)
            optimizer.zero_grad()
            sum(weights[n] * losses[n] for n in losses).backward()
            optimizer.step()
            for n in losses:
                sums[n] += float(losses[n].detach()) / len(loader)
        history.append(sums)
        val = evaluate_model(model, splits["val"], tasks)
        record = {"model": name, "epoch": epoch, "train_loss": sums,
                  "val_loss": {n: val[n]["loss"] for n in names},
                  "val": {n: {k: v for k, v in val[n].items() if k not in ("loss", "labelled", "note")} for n in names},
                  "weights": weights, "score": -sum(val[n]["loss"] for n in names), "seconds": 0.01, "lr": 0.01}
        if log_analysis and len(names) > 1:
            record["conflict"] = conflict.epoch_end()
            record["affinity"] = affinity.epoch_end()
        records.append(record)
    seconds = time.perf_counter() - started
    test = evaluate_model(model, splits["test"], tasks)
    return records, test, seconds, sum(p.numel() for p in model.parameters())


def write_fixture_run(path: Path, epochs: int = 5, seeds: tuple[int, ...] = (0, 1)) -> Path:
    """Train three single-task models and two multi-task variants per seed; write the run's files."""
    data, tasks = make_three_task_data(n=400, seed=0)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    splits = {"train": data.subset(order[:240]), "val": data.subset(order[240:320]), "test": data.subset(order[320:])}
    spec = {t.name: {"metric": t.main_metric, "higher_is_better": t.higher_is_better} for t in tasks}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(CONFIG)
    records: list[dict] = []
    variants: dict[str, dict] = {
        "single": {"kind": "single", "values": {}, "train_seconds": {}},
        "hard+ew": {"kind": "multi", "architecture": "hard", "balancing": "ew", "values": {}, "train_seconds": {}},
        "hard+dwa": {"kind": "multi", "architecture": "hard", "balancing": "dwa", "values": {}, "train_seconds": {}},
    }
    first_run: dict = {}
    for seed in seeds:
        single_values, single_seconds, single_params = {}, 0.0, 0
        singles = {}
        for task in tasks:
            rec, test, seconds, params = _train([task], splits, f"single/{task.name}", seed, epochs, False, False)
            single_values[task.name] = test[task.name][task.main_metric]
            single_seconds += seconds
            single_params += params
            singles[task.name] = (rec, test, seconds, params)
        variants["single"]["values"][str(seed)] = single_values
        variants["single"]["train_seconds"][str(seed)] = single_seconds
        variants["single"]["parameters"] = single_params
        for variant, dwa in (("hard+ew", False), ("hard+dwa", True)):
            rec, test, seconds, params = _train(tasks, splits, "multitask", seed, epochs, dwa, log_analysis=dwa)
            variants[variant]["values"][str(seed)] = {t.name: test[t.name][t.main_metric] for t in tasks}
            variants[variant]["train_seconds"][str(seed)] = seconds
            variants[variant]["parameters"] = params
            if seed == seeds[0] and dwa:
                first_run = {"singles": singles, "multi": (rec, test, seconds, params)}
    for rec, *_ in first_run["singles"].values():
        records += rec
    records += first_run["multi"][0]
    with open(path / "metrics.jsonl", "w") as file:
        for record in records:
            file.write(json.dumps(record) + "\n")
    multi_test, multi_seconds, multi_params = first_run["multi"][1:]
    table = {}
    for task in tasks:
        single = first_run["singles"][task.name][1][task.name][task.main_metric]
        multi = multi_test[task.name][task.main_metric]
        table[task.name] = {"metric": task.main_metric, "higher_is_better": task.higher_is_better, "single": single,
                            "multi": multi, "relative_change": relative_change(multi, single, task.higher_is_better)}
    comparison = {
        "dataset": "synthetic-three",
        "tasks": table,
        "delta_m": delta_m({n: r["multi"] for n, r in table.items()}, {n: r["single"] for n, r in table.items()},
                           {n: r["higher_is_better"] for n, r in table.items()}),
        "parameters": {"single_total": sum(s[3] for s in first_run["singles"].values()), "multi": multi_params},
        "train_seconds": {"single_total": sum(s[2] for s in first_run["singles"].values()), "multi": multi_seconds},
    }
    (path / "comparison.json").write_text(json.dumps(comparison, indent=2))
    compare = {"dataset": "synthetic-three", "tasks": spec, "baseline": "single", "seeds": list(seeds),
               "variants": variants}
    (path / "compare.json").write_text(json.dumps(compare, indent=2))
    assert all(math.isfinite(v) for row in table.values() for v in (row["single"], row["multi"]))
    return path
