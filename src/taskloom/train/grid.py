"""The one orchestration path of ``run``, ``train`` and ``compare``: a grid of models over splits and seeds.

Every cell is one model trained under the config's settings (same data split, trunk,
optimizer, epochs and batch) with its own seed, in its own directory; a finished cell
writes ``results.json`` atomically, and a resumed grid never retrains it. ``taskloom run``
and ``train --baselines`` are a one-seed grid of the config's own variant with single-task
baselines, ``train`` the same without them, ``compare`` any grid: all write ``compare.json``
(schema in :mod:`taskloom.evaluate.verdict`), its analysis (intervals over seeds and test
rows, verdicts, delta-m of Maninis et al. 2019), ``compare.csv`` / ``compare.md`` and the report.
Single-task baselines are the plain trunk + head, so every variant is compared to the same
models (Bingel & Sogaard 2017 found most task pairs lose under such identical settings); a
multi-task cell selects its checkpoints against the same seed's single-task validation scores.
With ``groups``, the TAG affinity (Fifty et al. 2021) of the first variant chooses task
groups, one multi-task model is trained per group, and the grouping is compared too.
With ``splits`` > 1 the whole grid is repeated over seeded train/validation/test splits.
When some tasks are auxiliary (``role: auxiliary``) and ``auxiliary_ablations`` is on, the first
variant is also trained without each auxiliary task X (and, with several, without all of them):
the ablation variants ``<variant>-without-X`` / ``<variant>-no-auxiliaries`` that the analysis
compares the full model with, per main task ("does X help?", :func:`taskloom.evaluate.verdict.auxiliary_effects`).
X may be listed in ``tasks`` or built in (``auxiliaries``): either way the cell's config is
:func:`taskloom.train.ablation.config_without` X, and built-in auxiliaries get no single-task baseline.

Training seconds are the wall time of a cell's epochs (steps, validation, checkpoint) without
the time its monitors spend on conflict / affinity analysis, which is ``analysis_seconds``.
Each epoch's seconds are saved as it ends (``seconds.json``), so a resumed cell counts the
epochs trained before the interruption. Each cell also saves the bootstrap replicates of its
test metrics (``bootstrap.npz``, :mod:`taskloom.evaluate.resampling`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from taskloom.config import Config, ConfigError, load_config, parse_config
from taskloom.data.dataset import DataSplits
from taskloom.evaluate.curves import curve_signals, single_task_curves
from taskloom.evaluate.degenerate import check_splits
from taskloom.evaluate.evaluator import collect_outputs, metrics_from_outputs
from taskloom.evaluate.grouping import missing_pairs, select_groups
from taskloom.evaluate.logged import mean_logged_matrix, read_records
from taskloom.evaluate.logged import variant_records as logged_variant_records
from taskloom.evaluate.references import reference_scores
from taskloom.evaluate.resampling import REPLICATES, BootstrapCounts, TaskOutputs, replicate_metric
from taskloom.evaluate.table import write_compare_tables
from taskloom.evaluate.verdict import analyze
from taskloom.train.ablation import builtin_auxiliary_names, config_without, masking_auxiliaries
from taskloom.train.artifact import choose_decision_thresholds, write_model_artifact
from taskloom.train.curriculum import check_curriculum
from taskloom.train.runner import (
    Callbacks, build_trainer, count_parameters, load_data, prepare_run, training_data, write_report_safely,
)
from taskloom.train import distributed
from taskloom.train.timing import TIMING_FILE, EpochClock, inference_seconds, write_json_atomically

log = logging.getLogger(__name__)

ALIASES = {"ew": "equal", "uw": "uncertainty"}
GRID_FILE = "grid.json"
RESULTS_FILE = "results.json"
BOOTSTRAP_FILE = "bootstrap.npz"
FAILED_FILE = "failed.json"


@dataclass
class GridSpec:
    """What a run trains: balancing methods x architectures, seeds, splits, baselines, tracking, TAG groups."""

    methods: list[str]
    architectures: list[str]
    seeds: list[int]
    measure: list[str] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    baselines: bool = True
    splits: int = 1
    auxiliary_ablations: bool = True

    def variant(self, architecture: str, method: str) -> str:
        return f"{architecture}+{method}"

    @property
    def ablated_variant(self) -> str:
        """The variant that is retrained without its auxiliary tasks (the first one, like the grouping variant)."""
        return self.variant(self.architectures[0], self.methods[0])

    def ablations(self, task_names: Sequence[str], auxiliary: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
        """``(variant name, tasks left out)`` of each auxiliary ablation: one per auxiliary task, then all of them.

        Empty when ablations are off or no main task is left to judge them on.
        """
        auxiliary = [t for t in task_names if t in set(auxiliary)]
        if not self.auxiliary_ablations or not auxiliary or len(auxiliary) == len(task_names):
            return []
        out = [(f"{self.ablated_variant}-without-{t}", (t,)) for t in auxiliary]
        if len(auxiliary) > 1:
            out.append((f"{self.ablated_variant}-no-auxiliaries", tuple(auxiliary)))
        return out

    @property
    def grouping_variant(self) -> str:
        """The variant whose affinity chooses the groups and whose settings train them."""
        return self.variant(self.architectures[0], self.methods[0])

    def unit(self, split: int, seed: int) -> str:
        """The key of one replication unit: the seed, or split x seed when the grid spans several splits."""
        return str(seed) if self.splits == 1 else f"split{split}-seed{seed}"

    def check(self) -> None:
        if not self.seeds:
            raise ConfigError("--seeds: need at least one seed")
        if self.splits < 1:
            raise ConfigError(f"--splits: need at least 1 split, got {self.splits}")
        if any(n < 1 for n in self.groups):
            raise ConfigError(f"--groups: numbers of networks must be at least 1, got {self.groups}")
        if self.groups and not self.baselines:
            raise ConfigError("--groups compares task groups with single-task models: it needs the baselines")
        if self.groups and self.splits > 1:
            raise ConfigError("--groups works on one split; drop --splits or --groups")


def spec_from_config(config: Config, baselines: bool | None = None) -> GridSpec:
    """The one-seed grid of ``run`` / ``train``: the config's own variant, with baselines if asked."""
    baselines = config.train.baselines if baselines is None else baselines
    return GridSpec(methods=[config.balancing.method], architectures=[config.model.architecture],
                    seeds=[config.train.seed], measure=list(config.tracking.measure), baselines=baselines,
                    auxiliary_ablations=baselines and config.train.auxiliary_ablations)


def resolve_spec(config: Config, methods: Sequence[str] | None = None, architectures: Sequence[str] | None = None,
                 seeds: int | None = None, measure: Sequence[str] | None = None, groups: Sequence[int] | None = None,
                 splits: int | None = None, stored: Mapping[str, Any] | None = None,
                 auxiliary_ablations: bool | None = None) -> GridSpec:
    """A compare grid from options; an option not given keeps ``stored`` (a resumed run's grid.json), else defaults.

    Defaults: the config's method and architecture, 3 seeds from ``train.seed``, one split, auxiliary
    ablations as ``train.auxiliary_ablations`` says.
    """
    stored = stored or {}
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds: need at least 1 seed, got {seeds}")
    chosen = list(measure) if measure is not None else list(stored.get("measure", []))
    unknown = sorted(set(chosen) - {"conflict", "affinity"})
    if unknown:
        raise ConfigError(f"--track: unknown {unknown}; choose from conflict, affinity")
    first = config.train.seed
    spec = GridSpec(
        methods=resolve_methods(methods or stored.get("methods") or [config.balancing.method]),
        architectures=resolve_architectures(architectures or stored.get("architectures")
                                            or [config.model.architecture]),
        seeds=list(range(first, first + seeds)) if seeds else list(stored.get("seeds") or range(first, first + 3)),
        measure=chosen,
        groups=list(groups) if groups is not None else list(stored.get("groups", [])),
        baselines=bool(stored.get("baselines", True)),
        splits=splits if splits is not None else int(stored.get("splits", 1)),
        auxiliary_ablations=(auxiliary_ablations if auxiliary_ablations is not None else
                             bool(stored.get("auxiliary_ablations", config.train.auxiliary_ablations))),
    )
    spec.check()
    return spec


def resolve_methods(names: Sequence[str]) -> list[str]:
    """Balancing method names with the short aliases (ew, uw) expanded; unknown names are refused."""
    from taskloom.balancing import BALANCERS

    out = []
    for name in names:
        method = ALIASES.get(name.strip(), name.strip())
        if method not in BALANCERS:
            aliases = ", ".join(f"{a} = {m}" for a, m in ALIASES.items())
            raise ConfigError(f"--methods: unknown balancing method {name!r}; known: {', '.join(BALANCERS)} "
                              f"(aliases: {aliases})")
        if method not in out:
            out.append(method)
    if not out:
        raise ConfigError("--methods: name at least one balancing method")
    return out


def resolve_architectures(names: Sequence[str]) -> list[str]:
    """Architecture names, each checked against the registry."""
    from taskloom.sharing import ARCHITECTURES

    out = []
    for name in (n.strip() for n in names):
        if name not in ARCHITECTURES:
            raise ConfigError(f"--architectures: unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("--architectures: name at least one architecture")
    return out


@dataclass(frozen=True)
class Cell:
    """One model of the grid: its directory (relative to the run), variant, split, seed and tasks."""

    key: str
    variant: str
    kind: str
    seed: int
    tasks: tuple[str, ...]
    architecture: str = "hard"
    balancing: str = "equal"
    split: int = 0
    without: tuple[str, ...] = ()

    @property
    def model_name(self) -> str:
        return self.key.rsplit("/", 1)[0]


def _prefix(spec: GridSpec, split: int) -> str:
    return f"split{split}/" if spec.splits > 1 else ""


def plan_cells(spec: GridSpec, task_names: Sequence[str], auxiliary: Sequence[str] = (),
               builtin: Sequence[str] = ()) -> list[Cell]:
    """Split by split, seed by seed: the single-task baselines, every variant, then the auxiliary ablations.

    Finished seeds come first; ``auxiliary`` names the auxiliary tasks (see :meth:`GridSpec.ablations`),
    ``builtin`` those of them the config's ``auxiliaries`` make from the inputs: they get no single-task
    baseline (nobody serves a model that only rebuilds its inputs), and the baselines are trained
    without them (whole inputs, a withheld feature column still withheld).
    """
    ablations = spec.ablations(task_names, auxiliary)
    cells = []
    for split in range(spec.splits):
        prefix = _prefix(spec, split)
        for seed in spec.seeds:
            if spec.baselines:
                cells += [Cell(f"{prefix}single/{t}/seed{seed}", "single", "single", seed, (t,), split=split,
                               without=tuple(builtin)) for t in task_names if t not in set(builtin)]
            for architecture in spec.architectures:
                for method in spec.methods:
                    name = spec.variant(architecture, method)
                    cells.append(Cell(f"{prefix}{name}/seed{seed}", name, "multi", seed, tuple(task_names),
                                      architecture, method, split))
            for name, removed in ablations:
                cells.append(Cell(f"{prefix}{name}/seed{seed}", name, "ablation", seed,
                                  tuple(t for t in task_names if t not in removed), spec.architectures[0],
                                  spec.methods[0], split, tuple(removed)))
    return cells


def group_cells(spec: GridSpec, groups: Sequence[Sequence[str]]) -> list[Cell]:
    """One cell per group of 2+ tasks and seed, trained like the grouping variant; single tasks reuse baselines."""
    cells = []
    for seed in spec.seeds:
        for group in groups:
            if len(group) > 1:
                cells.append(Cell(f"group/{'+'.join(group)}/seed{seed}", "group", "group", seed, tuple(group),
                                  spec.architectures[0], spec.methods[0]))
    return cells


def cell_config(config: Config, spec: GridSpec, cell: Cell) -> Config:
    """The config of one cell: the base config with the cell's seed, split, architecture, method and tracking.

    A cell trained without some auxiliary tasks (an ablation, or a single-task baseline without the built-in
    auxiliaries) starts from :func:`taskloom.train.ablation.config_without`.
    """
    config = config_without(config, cell.without, f"grid cell {cell.key}")
    data = config.model_dump()
    data["train"]["seed"] = cell.seed
    data["train"]["baselines"] = False
    data["data"]["split_seed"] = config.data.split_seed + cell.split
    if cell.architecture != config.model.architecture:
        data["model"]["architecture"], data["model"]["options"] = cell.architecture, {}
    if cell.balancing != config.balancing.method:
        data["balancing"] = {"method": cell.balancing, "options": {}}
    measure = list(spec.measure) if cell.kind not in ("single", "ablation") else []
    if spec.groups and cell.variant == spec.grouping_variant and "affinity" not in measure:
        measure.append("affinity")
    data["tracking"]["measure"] = measure
    selection = data["selection"]
    named = set(selection.get("weights") or {}) | ({selection["task"]} if selection.get("task") else set())
    subset = cell.kind in ("group", "ablation")  # a model of some of the tasks
    if subset and not named <= set(cell.tasks):
        data["selection"] = {"score": "mean_relative"}
    elif subset and selection.get("weights"):
        selection["weights"] = {t: w for t, w in selection["weights"].items() if t in cell.tasks}
    weights = data["balancing"]["options"].get("weights")
    if subset and isinstance(weights, dict):  # static weights: the model's own tasks
        data["balancing"]["options"]["weights"] = {t: w for t, w in weights.items() if t in cell.tasks}
    if subset and selection.get("baselines"):
        data["selection"]["baselines"] = {t: v for t, v in selection["baselines"].items() if t in cell.tasks}
    if subset and config.tasks is not None:
        data["model"]["options"] = options_for_tasks(data["model"]["options"], [t.name for t in config.tasks],
                                                     cell.tasks)
    return parse_config(data, f"the config of grid cell {cell.key}")


def options_for_tasks(options: Mapping[str, Any], names: Sequence[str], kept: Sequence[str]) -> dict[str, Any]:
    """Architecture options that name tasks (a per-task mapping, a task order) restricted to the ``kept`` tasks."""
    known, out = set(names), {}
    for key, value in options.items():
        if isinstance(value, Mapping) and value and set(value) <= known:
            value = {t: v for t, v in value.items() if t in kept}
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value) and set(value) <= known:
            value = [t for t in value if t in kept]
        out[key] = value
    return out


def _skipped_tracking(trainer: Any) -> str | None:
    return next((m.skipped for m in trainer.monitors if getattr(m, "skipped", None)), None)


def _best_validation(trainer: Any, tasks: Sequence[Any]) -> dict[str, float]:
    """Each task's main validation metric at the model's best epoch (what single-task selection reached)."""
    history = trainer.history
    for record in history.records:
        if record["epoch"] == history.best_epoch:
            values = {t.name: record.get("val", {}).get(t.name, {}).get(t.main_metric) for t in tasks}
            return {name: value for name, value in values.items() if value is not None}
    return {}


def save_replicates(path: Path, tasks: Sequence[Any], collected: Mapping[str, Mapping[str, Any]],
                    counts: BootstrapCounts) -> None:
    """Each task's main test metric on every bootstrap replicate of the split's rows, saved atomically."""
    rows = []
    for task in tasks:
        part = collected[task.name]
        if len(part["output"]) == 0:
            rows.append(np.full(len(counts), np.nan))
            continue
        data = TaskOutputs(part["output"].numpy(), part["target"].numpy(), part["row"].numpy())
        rows.append(replicate_metric(task, task.main_metric, data, counts))
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        np.savez(handle, tasks=np.array([t.name for t in tasks]), replicates=np.stack(rows))
    os.replace(temporary, path)


def train_cell(config: Config, spec: GridSpec, splits: DataSplits, cell: Cell, run_dir: Path,
               callbacks: Callbacks | None = None, counts: BootstrapCounts | None = None,
               baselines: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Train one cell (resuming its last checkpoint) and write its results; a finished cell is only read.

    ``counts``: the split's bootstrap row counts (replicates are saved when given); ``baselines``:
    single-task validation scores the multi-task checkpoint selection is measured against.
    """
    cell_dir = run_dir / cell.key
    results_file = cell_dir / RESULTS_FILE
    communicator = distributed.active()
    finished = results_file.is_file()
    if communicator is not None:  # the other ranks ask rank 0 whether to train this cell
        communicator.broadcast_object(finished)
    if finished:
        return json.loads(results_file.read_text())
    cell_dir.mkdir(parents=True, exist_ok=True)
    settings = cell_config(config, spec, cell)
    tasks = [t for t in splits.tasks if t.name in cell.tasks]
    write_model_artifact(cell_dir, settings, tasks, splits, multitask=cell.kind != "single")
    callbacks = dict(callbacks or {})
    chosen = dict(baselines or {})
    chosen.update(settings.selection.baselines or {})
    chosen = {t: v for t, v in chosen.items() if t in cell.tasks}
    clock = EpochClock(cell_dir / TIMING_FILE, callbacks.get("epoch"))
    trainer = build_trainer(settings, tasks, splits, cell_dir, cell.model_name, balancing=cell.kind != "single",
                            callbacks={**callbacks, "epoch": clock}, baselines=chosen or None)
    trainer.resume()
    if "start" in callbacks:
        callbacks["start"](cell.key, trainer.epochs, trainer.start_epoch)
    clock.start(trainer.start_epoch)
    trainer.fit(training_data(settings, splits, [t.name for t in tasks]), splits.val)
    seconds = clock.train_seconds
    best = trainer.checkpoint_dir / "best.pt"
    if best.is_file():
        trainer.load(best, restore_training=False)
    choose_decision_thresholds(cell_dir, splits.val)
    batch_size = max(settings.train.batch_size, 512)
    collected = collect_outputs(trainer.model, splits.test, tasks, batch_size, trainer.device)
    test = metrics_from_outputs(collected, tasks)
    if counts is not None:
        save_replicates(cell_dir / BOOTSTRAP_FILE, tasks, collected, counts)
    result = {
        "cell": cell.key, **{k: v for k, v in asdict(cell).items() if k != "key"},
        "unit": spec.unit(cell.split, cell.seed),
        "test": test,
        "values": {t.name: test[t.name].get(t.main_metric) for t in tasks},
        "best_validation": _best_validation(trainer, tasks),
        "parameters": count_parameters(trainer.model),
        "train_seconds": seconds,
        "analysis_seconds": clock.analysis_seconds,
        "inference_seconds": inference_seconds(trainer.model, splits.test, batch_size, trainer.device),
        "best_epoch": trainer.history.best_epoch,
    }
    if chosen:
        result["selection_baselines"] = chosen
    skipped = _skipped_tracking(trainer)
    if skipped:
        result["tracking_skipped"] = skipped
    reports = cell_dir / "regularizers.json"
    if reports.is_file():
        result["regularizers"] = json.loads(reports.read_text())
    write_json_atomically(results_file, result)
    return result


def variant_records(run_dir: Path, spec: GridSpec, variant: str) -> list[dict[str, Any]]:
    """The metrics.jsonl records of every seed of one multi-task variant of a compare run."""
    return logged_variant_records(run_dir, variant, spec.seeds)


def grid_affinity(run_dir: Path, spec: GridSpec) -> tuple[dict[str, dict[str, float | None]], int]:
    """The grouping variant's TAG affinity, averaged over every logged epoch of every seed."""
    return mean_logged_matrix(variant_records(run_dir, spec, spec.grouping_variant), "affinity")


def _variant_entry(results: Sequence[dict[str, Any]], units: Sequence[str], undefined: Mapping[str, Any],
                   **extra: Any) -> dict[str, Any]:
    """Sum a variant's models per unit: values merged (undefined tasks as null), parameters / times added."""
    values: dict[str, dict[str, Any]] = {}
    cells: dict[str, dict[str, str]] = {}
    train_seconds: dict[str, float] = {}
    analysis_seconds: dict[str, float] = {}
    inference: dict[str, float] = {}
    parameters = 0
    skipped = None
    for result in results:
        unit = result["unit"]
        values.setdefault(unit, {}).update(
            {t: (None if t in undefined.get(result.get("split", 0), {}) else v) for t, v in result["values"].items()})
        cells.setdefault(unit, {}).update({t: result["cell"] for t in result["values"]})
        train_seconds[unit] = train_seconds.get(unit, 0.0) + result["train_seconds"]
        analysis_seconds[unit] = analysis_seconds.get(unit, 0.0) + result.get("analysis_seconds", 0.0)
        inference[unit] = inference.get(unit, 0.0) + result["inference_seconds"]
        if result["unit"] == units[0]:
            parameters += result["parameters"]
        skipped = skipped or result.get("tracking_skipped")
    entry = {**extra, "values": {u: values[u] for u in units if u in values},
             "cells": {u: cells[u] for u in units if u in cells},
             "parameters": parameters, "train_seconds": train_seconds, "analysis_seconds": analysis_seconds,
             "inference_seconds": sum(inference.values()) / max(1, len(inference)),
             "models": len(results) // max(1, len(values))}
    if skipped:
        entry["tracking_skipped"] = skipped
    return entry


def _curve_signals(run_dir: Path, task_names: Sequence[str], seed: int) -> dict[str, Any]:
    records = []
    for task in task_names:
        path = run_dir / "single" / task / f"seed{seed}" / "metrics.jsonl"
        if path.is_file():
            records += read_records(path)
    out = {}
    for task, curve in single_task_curves(records).items():
        if len(curve) >= 2:
            signals = curve_signals(curve)
            out[task] = {"relative_slopes": {str(f): v for f, v in signals.relative_slopes.items()},
                         "plateau_epoch": signals.plateau_epoch, "epochs": signals.epochs}
    return out


def _merge_first_unit(run_dir: Path, cells: Sequence[Cell], seed: int) -> None:
    """The run's metrics.jsonl: every model's per-epoch records of the first split and seed (what the report plots)."""
    lines = []
    for cell in cells:
        path = run_dir / cell.key / "metrics.jsonl"
        if cell.seed == seed and cell.split == 0 and path.is_file():
            last: dict[int, str] = {}
            for record in read_records(path):
                last[int(record["epoch"])] = json.dumps(record)
            lines += [last[e] for e in sorted(last)]
    temporary = run_dir / ".metrics.jsonl.tmp"
    temporary.write_text("".join(line + "\n" for line in lines))
    os.replace(temporary, run_dir / "metrics.jsonl")


def load_splits(config: Config, spec: GridSpec) -> list[DataSplits]:
    """The data of every split of the grid (split j uses ``data.split_seed + j``)."""
    out = []
    for split in range(spec.splits):
        if split == 0:
            out.append(load_data(config))
            continue
        data = config.model_dump()
        data["data"]["split_seed"] = config.data.split_seed + split
        out.append(load_data(parse_config(data, f"the config of split {split}")))
    return out


def _merge_evaluation(per_split: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per split name and task: defined only if every split can measure it; the first reason, naming its split."""
    merged: dict[str, Any] = {}
    for index, evaluation in enumerate(per_split):
        for split, entries in evaluation.items():
            for task, entry in entries.items():
                current = merged.setdefault(split, {}).setdefault(task, {**entry})
                if index and not entry["defined"] and current["defined"]:
                    current.update(defined=False, reason=f"split {index}: {entry['reason']}")
    if len(per_split) > 1:
        merged["per_split"] = list(per_split)
    return merged


def _mean_references(per_split: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task in per_split[0]:
        out[task] = {}
        for kind in ("trivial", "linear"):
            scores = [r[task][kind] for r in per_split if r[task][kind] is not None]
            if not scores:
                out[task][kind] = None
                continue
            metrics = {m for s in scores for m in s}
            out[task][kind] = {m: (float(np.mean(vals)) if (vals := [s[m] for s in scores if s.get(m) is not None])
                                   else None) for m in sorted(metrics)}
    return out


def _fail(run_dir: Path, created: bool, error: BaseException) -> None:
    """A failed new run with no finished model leaves no directory; otherwise it is marked failed (resumable)."""
    finished = any(run_dir.rglob(RESULTS_FILE))
    if created and not finished:
        shutil.rmtree(run_dir, ignore_errors=True)
        log.warning("no model of the run finished: %s was removed (the error follows)", run_dir)
        return
    write_json_atomically(run_dir / FAILED_FILE, {"error": f"{type(error).__name__}: {error}",
                                                  "resume": f"taskloom compare --resume {run_dir}"})
    log.warning("finished models are kept in %s (failed.json says how to resume once the error below is fixed)",
                run_dir)


def run_grid(config: Config, spec: GridSpec | None, run_dir: Path | None = None, resume: bool = False,
             callbacks: Callbacks | None = None,
             on_cell: Callable[[Cell, int, int, bool], None] | None = None) -> dict[str, Any]:
    """Train (or, resumed, finish) the grid and write compare.json with its analysis, metrics.jsonl and the report.

    ``on_cell(cell, index, total, finished_before)`` is called before each cell; ``spec`` may
    be None when resuming (the run's grid.json is used). The data of every split is loaded and
    checked before a new run directory is made, so bad data leaves nothing behind.
    """
    if resume:
        if run_dir is None or not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume needs a run directory holding config.yaml; {run_dir} has none")
        config = load_config(run_dir / "config.yaml")
        if spec is None:
            if not (run_dir / GRID_FILE).is_file():
                raise ConfigError(f"{run_dir} has no {GRID_FILE}; pass --methods / --architectures / --seeds")
            spec = GridSpec(**json.loads((run_dir / GRID_FILE).read_text()))
    spec = spec or spec_from_config(config)
    spec.check()
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    data = load_splits(config, spec)
    check_curriculum(config, [t.name for t in data[0].tasks], config.train.epochs)  # before any cell trains
    communicator = distributed.active()
    if communicator is not None:
        if spec.groups:
            raise ConfigError("--groups is not supported on several processes yet: train on one process")
        if spec.measure:
            raise ConfigError("tracking.measure (--track conflict/affinity) is not supported on several processes "
                              "yet: it would measure one rank's rows; train on one process to track")
        if not communicator.is_main:
            _run_worker(config, spec, data, communicator, run_dir)
            return {}
    created = not resume and (run_dir is None or not run_dir.exists())
    config, run_dir = prepare_run(config, run_dir, resume)
    (run_dir / FAILED_FILE).unlink(missing_ok=True)
    try:
        return _run_grid(config, spec, data, run_dir, callbacks, on_cell)
    except Exception as error:
        _fail(run_dir, created, error)
        raise


def cell_splits(config: Config, cell: Cell, data: Sequence[DataSplits], reloaded: dict[Any, DataSplits]) -> DataSplits:
    """The data a cell trains on: its split's, reloaded without the masking reconstruct auxiliaries it drops.

    Reconstruct auxiliaries are added after the rows are split, so the reloaded data holds the same
    rows (checked); ``reloaded`` caches it per split and dropped set.
    """
    masked = masking_auxiliaries(config, cell.without)
    if not masked:
        return data[cell.split]
    key = (cell.split, masked)
    if key not in reloaded:
        dumped = config_without(config, masked, f"grid cell {cell.key}").model_dump()
        dumped["data"]["split_seed"] = config.data.split_seed + cell.split
        splits = load_data(parse_config(dumped, f"the data of grid cell {cell.key}"))
        full = data[cell.split]
        if [len(splits.train), len(splits.val), len(splits.test)] != [len(full.train), len(full.val), len(full.test)]:
            raise RuntimeError(f"grid cell {cell.key}: the data without {list(masked)} has other rows than the "
                               "run's split; auxiliary ablations need the same test rows")
        reloaded[key] = splits
        log.info("data of split %d reloaded without %s (whole training inputs)", cell.split, list(masked))
    return reloaded[key]


def _auxiliary_names(tasks: Sequence[Any]) -> list[str]:
    return [t.name for t in tasks if getattr(t, "role", "main") == "auxiliary"]


def _run_worker(config: Config, spec: GridSpec, data: Sequence[DataSplits], communicator: distributed.Communicator,
                run_dir: Path | None) -> None:
    """A rank other than 0: train each cell rank 0 trains, in step with it, and write nothing.

    Rank 0 says which cells it finished before (a resumed run); each trainer starts from rank 0's
    state (fresh or resumed), so the ranks stay identical; test metrics, analysis and files are rank 0's.
    """
    names = [t.name for t in data[0].tasks]
    reloaded: dict[Any, DataSplits] = {}
    for cell in plan_cells(spec, names, _auxiliary_names(data[0].tasks), builtin_auxiliary_names(config)):
        finished = run_dir is not None and (run_dir / cell.key / RESULTS_FILE).is_file()
        if communicator.broadcast_object(finished):
            continue
        splits = cell_splits(config, cell, data, reloaded)
        settings = cell_config(config, spec, cell)
        tasks = [t for t in splits.tasks if t.name in cell.tasks]
        trainer = build_trainer(settings, tasks, splits, None, cell.model_name, balancing=cell.kind != "single")
        trainer.fit(training_data(settings, splits, [t.name for t in tasks]), splits.val)


def _run_grid(config: Config, spec: GridSpec, data: Sequence[DataSplits], run_dir: Path,
              callbacks: Callbacks | None, on_cell: Callable[[Cell, int, int, bool], None] | None) -> dict[str, Any]:
    write_json_atomically(run_dir / GRID_FILE, asdict(spec))
    splits0 = data[0]
    names = [t.name for t in splits0.tasks]
    report = splits0.info.get("feature_report")
    if report is not None:
        write_json_atomically(run_dir / "features.json", {"columns": report, "notes": splits0.info.get("notes", [])})
    evaluation = [check_splits(s, s.tasks) for s in data]
    undefined = {j: {t for t, e in ev["test"].items() if not e["defined"]} for j, ev in enumerate(evaluation)}
    counts = [BootstrapCounts(len(s.test), REPLICATES, j) if len(s.test) else None for j, s in enumerate(data)]
    cells = plan_cells(spec, names, _auxiliary_names(splits0.tasks), builtin_auxiliary_names(config))
    reloaded: dict[Any, DataSplits] = {}
    total = len(cells) + (len(spec.groups) * len(spec.seeds) if spec.groups else 0)
    results: dict[str, dict[str, Any]] = {}
    done = 0

    def run(cell: Cell) -> None:
        nonlocal done
        if on_cell is not None:
            on_cell(cell, done, total, (run_dir / cell.key / RESULTS_FILE).is_file())
        selection: dict[str, float] = {}
        if cell.kind != "single":
            for other in results.values():
                if other["kind"] == "single" and other["unit"] == spec.unit(cell.split, cell.seed):
                    selection.update(other.get("best_validation") or {})
        splits = cell_splits(config, cell, data, reloaded)
        results[cell.key] = train_cell(config, spec, splits, cell, run_dir, callbacks, counts[cell.split], selection)
        done += 1

    for cell in cells:
        run(cell)
    units = [spec.unit(j, s) for j in range(spec.splits) for s in spec.seeds]
    variants: dict[str, Any] = {}
    if spec.baselines:
        variants["single"] = _variant_entry([results[c.key] for c in cells if c.kind == "single"], units, undefined,
                                            kind="single")
    for architecture in spec.architectures:
        for method in spec.methods:
            name = spec.variant(architecture, method)
            variants[name] = _variant_entry([results[c.key] for c in cells if c.variant == name], units, undefined,
                                            kind="multi", architecture=architecture, balancing=method)
    for name, removed in spec.ablations(names, _auxiliary_names(splits0.tasks)):
        variants[name] = _variant_entry([results[c.key] for c in cells if c.variant == name], units, undefined,
                                        kind="ablation", architecture=spec.architectures[0],
                                        balancing=spec.methods[0], reference=spec.ablated_variant,
                                        without=list(removed))
    groupings, grouping_affinity, extra_cells = _train_groups(spec, names, run_dir, variants, results, run, undefined)
    cells += extra_cells
    _merge_first_unit(run_dir, cells, spec.seeds[0])
    compare = {
        "dataset": config.data.dataset,
        "run_dir": str(run_dir),
        "tasks": {t.name: {"metric": t.main_metric, "higher_is_better": t.higher_is_better,
                          "role": t.role} for t in splits0.tasks},
        "baseline": "single" if spec.baselines else None,
        "seeds": spec.seeds,
        "splits": spec.splits,
        "replication": "seeds" if spec.splits == 1 else "splits x seeds",
        "units": {spec.unit(j, s): {"split": j, "seed": s} for j in range(spec.splits) for s in spec.seeds},
        "grid": asdict(spec),
        "variants": variants,
        "groupings": groupings,
        "grouping_affinity": grouping_affinity,
        "curve_signals": _curve_signals(run_dir, names, spec.seeds[0]) if spec.baselines and spec.splits == 1 else {},
        "split_sizes": {"train": splits0.info.get("sizes", {}).get("train", len(splits0.train)),
                        "val": len(splits0.val), "test": len(splits0.test)},
        "evaluation": _merge_evaluation(evaluation),
        "references": _mean_references([reference_scores(s, s.tasks, config.train.seed) for s in data]),
        "cells": {key: {k: v for k, v in result.items() if k not in ("values", "cell")}
                  for key, result in results.items()},
    }
    compare["analysis"] = analyze(compare, run_dir)
    for name, variant in compare["analysis"]["variants"].items():
        for task, row in variant["tasks"].items():
            if row.get("unstable"):
                log.warning("task %r (%s): %s", task, name, row["unstable"])
    write_json_atomically(run_dir / "compare.json", compare)
    write_compare_tables(compare, run_dir)
    write_report_safely(run_dir)
    return compare


def _train_groups(spec: GridSpec, names: Sequence[str], run_dir: Path, variants: dict[str, Any],
                  results: dict[str, dict[str, Any]], run: Callable[[Cell], None],
                  undefined: Mapping[int, Any]) -> tuple[dict[str, Any], dict[str, Any] | None, list[Cell]]:
    """TAG groupings from the grouping variant's affinity: their cells trained, their variants added."""
    if not spec.groups:
        return {}, None, []
    groupings: dict[str, Any] = {}
    affinity, epochs = grid_affinity(run_dir, spec)
    if not epochs:
        reason = variants.get(spec.grouping_variant, {}).get("tracking_skipped") or "no affinity was logged"
        log.warning("--groups: %s logged no task affinity (%s); no task groups are trained",
                    spec.grouping_variant, reason)
        return {}, {"variant": spec.grouping_variant, "matrix": {}, "epochs": 0, "seeds": spec.seeds,
                    "skipped": f"no task groups trained: {reason}"}, []
    missing = missing_pairs(affinity, names)
    if missing:
        shown = ", ".join(f"{a}->{b}" for a, b in missing[:10]) + (" ..." if len(missing) > 10 else "")
        log.warning("--groups: the affinity of %d task pair(s) was never measured (%s): they are treated as "
                    "missing and the groups are chosen on the measured pairs only", len(missing), shown)
    grouping_affinity = {"variant": spec.grouping_variant, "matrix": affinity, "epochs": epochs,
                         "seeds": spec.seeds, "missing_pairs": [list(pair) for pair in missing]}
    extra_cells: list[Cell] = []
    chosen = {}
    for n in spec.groups:
        grouping = select_groups(affinity, n, names, allow_missing=True)
        chosen[n] = grouping
        groupings[str(n)] = {"groups": grouping.groups, "score": grouping.score, "served_by": grouping.served_by,
                             "missing_pairs": len(missing)}
        extra_cells += [c for c in group_cells(spec, grouping.groups) if c not in extra_cells]
    for cell in extra_cells:
        run(cell)
    units = [spec.unit(0, s) for s in spec.seeds]
    for n, grouping in chosen.items():
        models = []
        for seed in spec.seeds:
            for index, group in enumerate(grouping.groups):
                served = [t for t, g in grouping.served_by.items() if g == index]
                source = results[f"single/{group[0]}/seed{seed}" if len(group) == 1
                                 else f"group/{'+'.join(group)}/seed{seed}"]
                models.append({**source, "values": {t: source["values"].get(t) for t in served}})
        variants[f"groups-{n}"] = _variant_entry(models, units, undefined, kind="groups", groups=grouping.groups,
                                                 architecture=spec.architectures[0], balancing=spec.methods[0])
    log.info("TAG groupings from %d logged epochs of %s: %s", epochs, spec.grouping_variant, groupings)
    return groupings, grouping_affinity, extra_cells


def run_training(config: Config, run_dir: Path | None = None, resume: bool = False,
                 callbacks: Callbacks | None = None) -> dict[str, Any]:
    """``taskloom train``: the config's model (with single-task baselines when ``train.baselines``), one seed."""
    return run_grid(config, None if resume else spec_from_config(config), run_dir, resume, callbacks)


def run_comparison(config: Config, run_dir: Path | None = None, resume: bool = False,
                   callbacks: Callbacks | None = None) -> dict[str, Any]:
    """``taskloom run``: single-task models vs the config's multi-task model, one seed, same settings."""
    return run_grid(config, None if resume else spec_from_config(config, baselines=True), run_dir, resume,
                    callbacks)
