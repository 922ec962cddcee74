"""The compare grid: single-task baselines and every (architecture x balancing) variant, over seeds.

Every cell is one model trained under the config's settings (same data split, trunk,
optimizer, epochs and batch) with its own seed, in its own directory; a finished cell
writes ``results.json`` atomically, and a resumed grid never retrains it. Single-task
baselines are the plain trunk + head, so every variant is compared to the same models
(Bingel & Sogaard 2017 found most task pairs lose under such identical settings).
With ``groups``, the TAG affinity (Fifty et al. 2021) of the first variant chooses task
groups, one multi-task model is trained per group, and the grouping is compared too.
``compare.json`` follows the schema in :mod:`taskloom.evaluate.verdict`; delta-m is Maninis et al. 2019;
the same table is written as ``compare.csv`` and ``compare.md``.

Training seconds are the wall time of a cell's epochs (steps, validation, checkpoint) without
the time its monitors spend on conflict / affinity analysis, which is ``analysis_seconds``:
only multi-task cells are tracked, and the comparison of times must not charge them for it.
Each epoch's seconds are saved as it ends (``seconds.json``), so a resumed cell counts the
epochs trained before the interruption.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from taskloom.config import Config, ConfigError, parse_config
from taskloom.data.dataset import BatchLoader, DataSplits, MultiTaskDataset
from taskloom.evaluate.curves import curve_signals, single_task_curves
from taskloom.evaluate.grouping import missing_pairs, select_groups
from taskloom.evaluate.logged import mean_logged_matrix, read_records
from taskloom.evaluate.logged import variant_records as logged_variant_records
from taskloom.evaluate.table import write_compare_tables
from taskloom.train.artifact import choose_decision_thresholds, write_model_artifact
from taskloom.train.timing import (
    TIMING_FILE, EpochClock, inference_seconds, read_epoch_seconds, write_json_atomically,
)
from taskloom.train.runner import (
    Callbacks, build_trainer, count_parameters, load_data, prepare_run, training_data, write_report_safely,
)

log = logging.getLogger(__name__)

ALIASES = {"ew": "equal", "uw": "uncertainty"}
GRID_FILE = "grid.json"
RESULTS_FILE = "results.json"


@dataclass
class GridSpec:
    """What a compare run trains: balancing methods x architectures, seeds, tracking, TAG group counts."""

    methods: list[str]
    architectures: list[str]
    seeds: list[int]
    measure: list[str] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)

    def variant(self, architecture: str, method: str) -> str:
        return f"{architecture}+{method}"

    @property
    def grouping_variant(self) -> str:
        """The variant whose affinity chooses the groups and whose settings train them."""
        return self.variant(self.architectures[0], self.methods[0])


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
    """One model of the grid: its directory (relative to the run), variant, seed and tasks."""

    key: str
    variant: str
    kind: str
    seed: int
    tasks: tuple[str, ...]
    architecture: str = "hard"
    balancing: str = "equal"

    @property
    def model_name(self) -> str:
        return self.key.rsplit("/", 1)[0]


def plan_cells(spec: GridSpec, task_names: Sequence[str]) -> list[Cell]:
    """Seed by seed: the single-task baselines, then every variant (finished seeds come first)."""
    cells = []
    for seed in spec.seeds:
        cells += [Cell(f"single/{t}/seed{seed}", "single", "single", seed, (t,)) for t in task_names]
        for architecture in spec.architectures:
            for method in spec.methods:
                name = spec.variant(architecture, method)
                cells.append(Cell(f"{name}/seed{seed}", name, "multi", seed, tuple(task_names), architecture, method))
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
    """The config of one cell: the base config with the cell's seed, architecture, method and tracking."""
    data = config.model_dump()
    data["train"]["seed"] = cell.seed
    data["train"]["baselines"] = False
    if cell.architecture != config.model.architecture:
        data["model"]["architecture"], data["model"]["options"] = cell.architecture, {}
    if cell.balancing != config.balancing.method:
        data["balancing"] = {"method": cell.balancing, "options": {}}
    measure = list(spec.measure) if cell.kind != "single" else []
    if spec.groups and cell.variant == spec.grouping_variant and "affinity" not in measure:
        measure.append("affinity")
    data["tracking"]["measure"] = measure
    selection = data["selection"]
    named = set(selection.get("weights") or {}) | ({selection["task"]} if selection.get("task") else set())
    if cell.kind == "group" and not named <= set(cell.tasks):
        data["selection"] = {"score": "mean_relative"}
    elif cell.kind == "group" and selection.get("weights"):
        selection["weights"] = {t: w for t, w in selection["weights"].items() if t in cell.tasks}
    if cell.kind == "group" and selection.get("baselines"):
        data["selection"]["baselines"] = {t: v for t, v in selection["baselines"].items() if t in cell.tasks}
    return parse_config(data, f"the config of grid cell {cell.key}")


@torch.no_grad()
def _skipped_tracking(trainer: Any) -> str | None:
    return next((m.skipped for m in trainer.monitors if getattr(m, "skipped", None)), None)


def train_cell(config: Config, spec: GridSpec, splits: DataSplits, cell: Cell, run_dir: Path,
               callbacks: Callbacks | None = None) -> dict[str, Any]:
    """Train one cell (resuming its last checkpoint) and write its results; a finished cell is only read."""
    cell_dir = run_dir / cell.key
    results_file = cell_dir / RESULTS_FILE
    if results_file.is_file():
        return json.loads(results_file.read_text())
    cell_dir.mkdir(parents=True, exist_ok=True)
    settings = cell_config(config, spec, cell)
    tasks = [t for t in splits.tasks if t.name in cell.tasks]
    write_model_artifact(cell_dir, settings, tasks, splits, multitask=cell.kind != "single")
    callbacks = dict(callbacks or {})
    trainer = build_trainer(settings, tasks, splits, cell_dir, cell.model_name, balancing=cell.kind != "single",
                            callbacks=callbacks)
    trainer.resume()
    clock = EpochClock(cell_dir / TIMING_FILE, read_epoch_seconds(cell_dir / TIMING_FILE, trainer.start_epoch),
                       callbacks.get("epoch"))
    trainer.on_epoch = clock
    if "start" in callbacks:
        callbacks["start"](cell.key, trainer.epochs, trainer.start_epoch)
    clock.mark = time.perf_counter()
    trainer.fit(training_data(settings, splits, [t.name for t in tasks]), splits.val)
    seconds = clock.train_seconds
    best = trainer.checkpoint_dir / "best.pt"
    if best.is_file():
        trainer.load(best, restore_training=False)
    choose_decision_thresholds(cell_dir, splits.val)
    test = trainer.evaluate(splits.test)
    result = {
        "cell": cell.key, **{k: v for k, v in asdict(cell).items() if k != "key"},
        "test": test,
        "values": {t.name: test[t.name].get(t.main_metric) for t in tasks},
        "parameters": count_parameters(trainer.model),
        "train_seconds": seconds,
        "analysis_seconds": clock.analysis_seconds,
        "inference_seconds": inference_seconds(trainer.model, splits.test, max(settings.train.batch_size, 512),
                                               trainer.device),
        "best_epoch": trainer.history.best_epoch,
    }
    skipped = _skipped_tracking(trainer)
    if skipped:
        result["tracking_skipped"] = skipped
    write_json_atomically(results_file, result)
    return result


def variant_records(run_dir: Path, spec: GridSpec, variant: str) -> list[dict[str, Any]]:
    """The metrics.jsonl records of every seed of one multi-task variant of a compare run."""
    return logged_variant_records(run_dir, variant, spec.seeds)


def grid_affinity(run_dir: Path, spec: GridSpec) -> tuple[dict[str, dict[str, float | None]], int]:
    """The grouping variant's TAG affinity, averaged over every logged epoch of every seed."""
    return mean_logged_matrix(variant_records(run_dir, spec, spec.grouping_variant), "affinity")


def _variant_entry(results: Sequence[dict[str, Any]], seeds: Sequence[int], **extra: Any) -> dict[str, Any]:
    """Sum a variant's models per seed: values merged, parameters / times added."""
    values: dict[str, dict[str, Any]] = {}
    train_seconds: dict[str, float] = {}
    analysis_seconds: dict[str, float] = {}
    inference: dict[str, float] = {}
    parameters = 0
    skipped = None
    for result in results:
        seed = str(result["seed"])
        values.setdefault(seed, {}).update(result["values"])
        train_seconds[seed] = train_seconds.get(seed, 0.0) + result["train_seconds"]
        analysis_seconds[seed] = analysis_seconds.get(seed, 0.0) + result.get("analysis_seconds", 0.0)
        inference[seed] = inference.get(seed, 0.0) + result["inference_seconds"]
        if result["seed"] == seeds[0]:
            parameters += result["parameters"]
        skipped = skipped or result.get("tracking_skipped")
    entry = {**extra, "values": {str(s): values[str(s)] for s in seeds if str(s) in values},
             "parameters": parameters, "train_seconds": train_seconds, "analysis_seconds": analysis_seconds,
             "inference_seconds": sum(inference.values()) / max(1, len(inference)),
             "models": len(results) // len(seeds)}
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


def _merge_first_seed(run_dir: Path, cells: Sequence[Cell], seed: int) -> None:
    """The run's metrics.jsonl: every model's per-epoch records of the first seed (what the report plots)."""
    lines = []
    for cell in cells:
        path = run_dir / cell.key / "metrics.jsonl"
        if cell.seed == seed and path.is_file():
            last: dict[int, str] = {}
            for record in read_records(path):
                last[int(record["epoch"])] = json.dumps(record)
            lines += [last[e] for e in sorted(last)]
    temporary = run_dir / ".metrics.jsonl.tmp"
    temporary.write_text("".join(line + "\n" for line in lines))
    os.replace(temporary, run_dir / "metrics.jsonl")


def run_grid(config: Config, spec: GridSpec | None, run_dir: Path | None = None, resume: bool = False,
             callbacks: Callbacks | None = None,
             on_cell: Callable[[Cell, int, int, bool], None] | None = None) -> dict[str, Any]:
    """Train (or, resumed, finish) the grid and write compare.json, metrics.jsonl and the report.

    ``on_cell(cell, index, total, finished_before)`` is called before each cell; ``spec`` may
    be None when resuming (the run's grid.json is used).
    """
    config, run_dir = prepare_run(config, run_dir, resume)
    grid_file = run_dir / GRID_FILE
    if spec is None:
        if not grid_file.is_file():
            raise ConfigError(f"{run_dir} has no {GRID_FILE}; pass --methods / --architectures / --seeds")
        spec = GridSpec(**json.loads(grid_file.read_text()))
    if not spec.seeds:
        raise ConfigError("--seeds: need at least one seed")
    write_json_atomically(grid_file, asdict(spec))
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    splits = load_data(config)
    names = [t.name for t in splits.tasks]
    if any(n < 1 for n in spec.groups):
        raise ConfigError(f"--groups: numbers of networks must be at least 1, got {spec.groups}")
    cells = plan_cells(spec, names)
    total = len(cells) + (len(spec.groups) * len(spec.seeds) if spec.groups else 0)
    results: dict[str, dict[str, Any]] = {}
    done = 0

    def run(cell: Cell) -> None:
        nonlocal done
        if on_cell is not None:
            on_cell(cell, done, total, (run_dir / cell.key / RESULTS_FILE).is_file())
        results[cell.key] = train_cell(config, spec, splits, cell, run_dir, callbacks)
        done += 1

    for cell in cells:
        run(cell)
    variants: dict[str, Any] = {
        "single": _variant_entry([results[c.key] for c in cells if c.kind == "single"], spec.seeds, kind="single")}
    for architecture in spec.architectures:
        for method in spec.methods:
            name = spec.variant(architecture, method)
            variants[name] = _variant_entry([results[c.key] for c in cells if c.variant == name], spec.seeds,
                                            kind="multi", architecture=architecture, balancing=method)
    groupings: dict[str, Any] = {}
    grouping_affinity: dict[str, Any] | None = None
    affinity, epochs = grid_affinity(run_dir, spec) if spec.groups else ({}, 0)
    if spec.groups and not epochs:
        reason = variants.get(spec.grouping_variant, {}).get("tracking_skipped") or "no affinity was logged"
        log.warning("--groups: %s logged no task affinity (%s); no task groups are trained",
                    spec.grouping_variant, reason)
        grouping_affinity = {"variant": spec.grouping_variant, "matrix": {}, "epochs": 0, "seeds": spec.seeds,
                             "skipped": f"no task groups trained: {reason}"}
    elif spec.groups:
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
        total = len(cells) + len(extra_cells)
        for cell in extra_cells:
            run(cell)
        cells += extra_cells
        for n, grouping in chosen.items():
            models = []
            for seed in spec.seeds:
                for index, group in enumerate(grouping.groups):
                    served = [t for t, g in grouping.served_by.items() if g == index]
                    source = results[f"single/{group[0]}/seed{seed}" if len(group) == 1
                                     else f"group/{'+'.join(group)}/seed{seed}"]
                    models.append({**source, "values": {t: source["values"].get(t) for t in served}})
            variants[f"groups-{n}"] = _variant_entry(models, spec.seeds, kind="groups", groups=grouping.groups,
                                                     architecture=spec.architectures[0], balancing=spec.methods[0])
        log.info("TAG groupings from %d logged epochs of %s: %s", epochs, spec.grouping_variant, groupings)
    _merge_first_seed(run_dir, cells, spec.seeds[0])
    compare = {
        "dataset": config.data.dataset,
        "run_dir": str(run_dir),
        "tasks": {t.name: {"metric": t.main_metric, "higher_is_better": t.higher_is_better} for t in splits.tasks},
        "baseline": "single",
        "seeds": spec.seeds,
        "grid": asdict(spec),
        "variants": variants,
        "groupings": groupings,
        "grouping_affinity": grouping_affinity,
        "curve_signals": _curve_signals(run_dir, names, spec.seeds[0]),
        "split_sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
    }
    write_json_atomically(run_dir / "compare.json", compare)
    write_compare_tables(compare, run_dir)
    write_report_safely(run_dir)
    return compare
