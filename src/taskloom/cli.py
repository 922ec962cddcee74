"""The command line: ``taskloom run | train | compare | auto | affinity | report | list | describe``
(and ``predict | export | serve``).

The CLI owns the terminal (rich tables and progress).

Exit codes: 0 done; 2 a config, data or checkpoint error (the message names the field or file);
3 training diverged (a non-finite loss; the message names the task, epoch and step).
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from taskloom.config import Config, ConfigError, load_config, parse_config

console = Console()

DEFAULT_RUN = {
    "name": "multimnist",
    "data": {"dataset": "multimnist", "val_fraction": 0.1, "test_fraction": 0.2},
    "model": {"architecture": "hard", "trunk": {"name": "lenet"}},
    "optimizer": {"name": "adamw", "lr": 0.002},
    "train": {"epochs": 20, "batch_size": 128, "seed": 0},
}


def default_run_config() -> Config:
    """The built-in job of ``taskloom run``: MultiMNIST (left and right digit), LeNet trunk, hard sharing."""
    return parse_config(DEFAULT_RUN, "the built-in run config")


class ProgressCallbacks(dict):
    """Rich progress bars fed by the trainer's step and epoch callbacks; with ``verbose``, one line per epoch
    with the validation metrics and the selection score that picks the best checkpoint."""

    def __init__(self, progress: Progress, verbose: bool = False) -> None:
        super().__init__(start=self.start, step=self.step, epoch=self.epoch)
        self.progress = progress
        self.verbose = verbose
        self.task_id: Any = None
        self.model = ""

    def start(self, model: str, epochs: int, first_epoch: int) -> None:
        if self.task_id is not None:
            self.progress.remove_task(self.task_id)
        self.model = model
        self.task_id = self.progress.add_task(f"{model} epoch {min(first_epoch, epochs)}/{epochs}", total=None)
        self.epochs = epochs

    def step(self, step: int, steps: int) -> None:
        self.progress.update(self.task_id, completed=step, total=steps)

    def epoch(self, record: dict[str, Any]) -> None:
        self.progress.update(self.task_id,
                             description=f"{self.model} epoch {min(record['epoch'] + 1, self.epochs)}/{self.epochs}")
        if self.verbose:
            self.progress.console.print(epoch_line(self.model, record), highlight=False)


def epoch_line(model: str, record: dict[str, Any]) -> str:
    """One epoch in words: validation metrics, and the selection score with what it measures."""
    line = f"{model} epoch {record['epoch']}: {_main_metrics(record)}"
    score = record.get("score")
    if score is not None:
        value = "undefined (a metric is not finite)" if score == float("-inf") else f"{score:+.2f}"
        line += f"; checkpoint selection: {record.get('selected_by', 'score')} = {value}"
    return line


def _main_metrics(record: dict[str, Any]) -> str:
    parts = []
    for task, metrics in record.get("val", {}).items():
        values = [f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float))][:2]
        parts.append(f"{task}: " + ", ".join(values))
    return "; ".join(parts) or "no validation data"


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    data = config.model_dump()
    if getattr(args, "epochs", None):
        data["train"]["epochs"] = args.epochs
    if getattr(args, "output", None):
        data["output_dir"] = str(args.output)
    if getattr(args, "baselines", False):
        data["train"]["baselines"] = True
    if getattr(args, "device", None):
        data["train"]["device"] = args.device
    if getattr(args, "auxiliary_ablations", None) is not None:
        data["train"]["auxiliary_ablations"] = args.auxiliary_ablations
    return parse_config(data)


def check_resume(run_dir: Path) -> None:
    """Before a resume does any work: every checkpoint of the run must be readable (a bad one is named),
    and the temporary files of writes a kill interrupted are removed."""
    from taskloom.train.checkpoint import check_run_checkpoints, remove_orphan_temporaries

    if not run_dir.is_dir():
        raise ConfigError(f"--resume: {run_dir} is not a directory; pass the run directory a run printed")
    check_run_checkpoints(run_dir)
    remove_orphan_temporaries(run_dir)


def command_run(args: argparse.Namespace) -> int:
    from taskloom.train.grid import run_comparison

    if args.resume:
        check_resume(Path(args.resume))
        config, run_dir = _stored_config(Path(args.resume)), Path(args.resume)
    else:
        config = load_config(args.config) if args.config else default_run_config()
        config, run_dir = _apply_overrides(config, args), None
    return _execute(args, config, lambda callbacks, _: run_comparison(config, run_dir, resume=bool(args.resume),
                                                                       callbacks=callbacks))


def _launch_processes(args: argparse.Namespace) -> int:
    """``--nproc N``: run this same command in N processes through torch's elastic launcher (torchrun)."""
    rest, skip = [], False
    for index, word in enumerate(args.argv):
        if skip:
            skip = False
            continue
        if word == "--nproc":
            skip = True
            continue
        if word.startswith("--nproc="):
            continue
        rest.append(word)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "taskloom", *rest]
    return subprocess.call(command)


def command_train(args: argparse.Namespace) -> int:
    from taskloom.train.grid import run_training

    if args.resume:
        check_resume(Path(args.resume))
        config, run_dir = _stored_config(Path(args.resume)), Path(args.resume)
    else:
        if not args.config:
            raise ConfigError("taskloom train needs a CONFIG.yaml (or --resume RUN_DIR)")
        config, run_dir = _apply_overrides(load_config(args.config), args), None
    return _execute(args, config, lambda callbacks, _: run_training(config, run_dir, resume=bool(args.resume),
                                                                     callbacks=callbacks))


def _stored_config(run_dir: Path) -> Config:
    """The config a run directory was started with (the built-in job's when it has none)."""
    stored = run_dir / "config.yaml"
    return load_config(stored) if stored.is_file() else default_run_config()


#: the work of ``run``, ``train`` and ``compare``: (callbacks or None, rich progress or None) -> compare.json's content
Work = Callable[[Any, Any], dict[str, Any]]


def _execute(args: argparse.Namespace, config: Config, work: Work) -> int:
    """Run ``work`` in this process, or data-parallel in N processes (``--nproc N``, or when started by torchrun).

    ``--nproc N`` relaunches this same command through torch's elastic launcher; each process
    it starts joins the group (gloo on CPU, NCCL on CUDA, from ``train.device``) and runs the
    whole job in step with the others. Only the first process shows progress and the table.
    """
    from taskloom.train import distributed

    nproc = getattr(args, "nproc", None)
    if nproc is not None and nproc < 1:
        raise ConfigError(f"--nproc: need at least 1 process, got {nproc}")
    if nproc is not None and nproc > 1 and not distributed.launched_by_torchrun():
        return _launch_processes(args)
    if distributed.launched_by_torchrun():
        distributed.leave_process(_execute_in_group(args, config, work))
    with _progress() as progress:
        compare = work(ProgressCallbacks(progress, args.verbose), progress)
    print_compare(compare)
    return 0


def _execute_in_group(args: argparse.Namespace, config: Config, work: Work) -> int:
    """One process of a data-parallel job (started by torchrun): rank 0 shows progress and the table."""
    from taskloom.train import distributed

    communicator = distributed.start(config.train.device)
    try:
        if not communicator.is_main:
            work(None, None)
            communicator.barrier()  # leave the group only once rank 0 has written everything
            return 0
        with _progress() as progress:
            compare = work(ProgressCallbacks(progress, args.verbose), progress)
        communicator.barrier()
        print_compare(compare)
        return 0
    finally:
        distributed.stop()


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _integers(text: str | None, option: str) -> list[int]:
    try:
        return [int(part) for part in _names(text) or []]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated whole numbers, got {text!r}") from None


def command_compare(args: argparse.Namespace) -> int:
    from taskloom.train.grid import GRID_FILE, resolve_spec, run_grid

    if args.resume:
        check_resume(Path(args.resume))
        run_dir = Path(args.resume)
        config = default_run_config()
    else:
        if not args.config:
            raise ConfigError("taskloom compare needs a CONFIG.yaml (or --resume RUN_DIR)")
        config, run_dir = _apply_overrides(load_config(args.config), args), None
    options = (args.methods, args.architectures, args.seeds, args.track, args.groups, args.splits,
               args.auxiliary_ablations)
    spec = None
    if any(v is not None for v in options) or not args.resume:  # on resume, an option not given keeps grid.json's
        stored = run_dir / GRID_FILE if args.resume else None
        base = load_config(run_dir / "config.yaml") if args.resume and (run_dir / "config.yaml").is_file() else config
        spec = resolve_spec(base, methods=_names(args.methods), architectures=_names(args.architectures),
                            seeds=args.seeds, measure=_names(args.track),
                            groups=_integers(args.groups, "--groups") if args.groups is not None else None,
                            splits=args.splits, auxiliary_ablations=args.auxiliary_ablations,
                            stored=json.loads(stored.read_text()) if stored and stored.is_file() else None)

    def work(callbacks: Any, progress: Any) -> dict[str, Any]:
        on_cell = None
        if progress is not None:
            grid_task = progress.add_task("grid", total=None)

            def on_cell(cell: Any, index: int, total: int, finished: bool) -> None:
                state = "finished before, kept" if finished else "training"
                progress.update(grid_task, completed=index, total=total,
                                description=f"grid cell {index + 1}/{total}: {cell.key} ({state})")

        compare = run_grid(config, spec, run_dir, resume=bool(args.resume), callbacks=callbacks, on_cell=on_cell)
        if progress is not None:
            progress.update(grid_task, completed=progress.tasks[0].total, description="grid done")
        return compare

    return _execute(args, _stored_config(run_dir) if args.resume else config, work)


def command_auto(args: argparse.Namespace) -> int:
    from taskloom.auto import parse_budget, run_auto
    from taskloom.auto.search import require_optuna

    if args.resume:
        config, run_dir = None, Path(args.resume)
    else:
        if not args.config:
            raise ConfigError("taskloom auto needs a CONFIG.yaml (or --resume RUN_DIR)")
        config, run_dir = _apply_overrides(load_config(args.config), args), args.run_dir
    space: dict[str, Any] = {}  # only the options given: a resumed study keeps the others
    if args.architectures is not None:
        space["architectures"] = _names(args.architectures) or []
    if args.methods is not None:
        space["methods"] = _names(args.methods) or []
    if args.groups is not None:
        space["groups"] = _integers(args.groups, "--groups")
    if args.lr is not None:
        bounds = args.lr.split(",")
        try:
            space["lr"] = (float(bounds[0]), float(bounds[1]))
        except (ValueError, IndexError):
            raise ConfigError(f"--lr: expected LOW,HIGH (e.g. 1e-4,1e-1), got {args.lr!r}") from None
    budget = parse_budget(args.budget) if args.budget is not None else None

    def on_trial(number: int, params: dict[str, Any]) -> None:
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        console.print(f"trial {number}: {shown}", highlight=False)

    def on_trial_end(number: int, state: str, value: float | None, last_epoch: int | None) -> None:
        if state == "complete":
            outcome = f"validation score {value:.4g}"
        elif state == "pruned":
            outcome = f"pruned after epoch {last_epoch}" if last_epoch is not None else "pruned"
        else:
            outcome = f"{state} (no finite validation score)"
        console.print(f"trial {number}: {outcome}", highlight=False)

    require_optuna()  # before its log level is set: importing optuna sets it
    logging.getLogger("optuna").setLevel(logging.INFO if args.verbose else logging.WARNING)
    with _progress() as progress:
        auto = run_auto(config, space, run_dir, trials=args.trials, budget=budget, seeds=args.seeds,
                        storage=args.storage, resume=bool(args.resume), pruner=args.pruner,
                        final=not args.search_only, on_trial=on_trial, on_trial_end=on_trial_end,
                        callbacks=ProgressCallbacks(progress, args.verbose))
    counts = ", ".join(f"{n} {state}" for state, n in auto["counts"].items())
    console.print(f"search: {len(auto['trials'])} trials in the study ({counts})", highlight=False)
    if auto["winner"] is not None:
        winner = auto["winner"]
        console.print(f"best trial {winner['trial']}: validation score {winner['value']:.4g} with {winner['params']}",
                      highlight=False, soft_wrap=True)
    importances = auto["importances"]
    if "values" in importances:
        console.print("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances["values"].items()),
                      highlight=False)
    else:
        console.print(f"importances omitted: {importances['omitted']}", highlight=False)
    if "recommendation" in auto:
        console.print(f"[bold]recommendation:[/] {auto['recommendation']['text']}", highlight=False, soft_wrap=True)
    console.print(f"run directory: {auto['run_dir']}", soft_wrap=True, highlight=False)
    return 0


def _interval(low: Any, high: Any) -> str:
    return "" if low is None or high is None else f"[{low:+.2f}, {high:+.2f}]"


def _change_cell(row: dict[str, Any]) -> str:
    if row.get("relative_change") is None:
        return "n/a"
    interval = _interval(row.get("low"), row.get("high"))
    return f"{row['relative_change']:+.2f}" + (f"\n{interval}" if interval else "")


def _metric_cell(row: dict[str, Any]) -> str:
    if row.get("mean") is None:
        return "undefined" if row.get("verdict") == "undefined" else "n/a"
    spread = "" if row.get("std") is None else f" \u00b1 {row['std']:.4f}"
    mark = " !" if row.get("worse_than_trivial") else ""
    return f"{row['mean']:.4f}{spread}{mark}"


def _reference_rows(table: Table, reference: dict[str, Any] | None, metric: str, compared: bool) -> None:
    for kind in ("trivial", "linear"):
        scores = (reference or {}).get(kind)
        if scores and scores.get(metric) is not None:
            table.add_row("", f"({kind})", f"{scores[metric]:.4f}", *(("", "reference") if compared else ("reference",)))


def print_compare(compare: dict[str, Any]) -> None:
    """The run's tables, readable at 80 columns: per task and model, per variant, then what the numbers mean."""
    from taskloom.evaluate.verdict import analyze

    result = compare.get("analysis") or analyze(compare, compare.get("run_dir"))
    variants, baseline = result["variants"], result["baseline"]
    replication = (f"{compare.get('splits', 1)} splits x {len(compare['seeds'])} seeds"
                   if compare.get("splits", 1) > 1 else f"{len(compare['seeds'])} seed(s)")
    table = Table(title=f"{compare['dataset']}: test metric per task (mean \u00b1 sd over {replication})")
    columns = [("task", "left"), ("model", "left"), ("test metric", "right")]
    columns += [("change % [95% CI]", "right"), ("verdict", "left")] if baseline else [("note", "left")]
    for column, justify in columns:
        table.add_column(column, justify=justify, overflow="fold")
    worse = undefined = unstable = False
    for task, spec in compare["tasks"].items():
        arrow = "\u2191" if spec["higher_is_better"] else "\u2193"
        shown = [(n, v) for n, v in variants.items() if task not in (compare["variants"][n].get("without") or [])]
        for k, (name, variant) in enumerate(shown):
            row = variant["tasks"][task]
            worse |= bool(row.get("worse_than_trivial"))
            undefined |= row.get("verdict") == "undefined"
            unstable |= bool(row.get("unstable"))
            label = f"{task}\n{spec['metric']} {arrow}" if k == 0 else ""
            if name == baseline:
                table.add_row(label, name, _metric_cell(row), "", "baseline")
                continue
            if not baseline:
                table.add_row(label, name, _metric_cell(row), "")
                continue
            colour = {"helps": "green", "hurts": "red"}.get(row.get("verdict", ""), "white")
            verdict = row.get("verdict", "") + (" *" if row.get("unstable") else "")
            table.add_row(label, name, _metric_cell(row), _change_cell(row), f"[{colour}]{verdict}[/]")
        _reference_rows(table, (compare.get("references") or {}).get(task), spec["metric"], bool(baseline))
        table.add_section()
    console.print(table)
    if baseline:
        summary = Table(title="per variant: delta-m % over the defined tasks (Maninis et al. 2019)")
        for column in ("variant", "delta-m % [95% CI]", "params", "train s", "infer s"):
            summary.add_column(column, justify="left" if column == "variant" else "right", overflow="fold")
        for name, variant in variants.items():
            raw = compare["variants"][name]
            seconds = raw.get("train_seconds") or {}
            mean_seconds = sum(seconds.values()) / len(seconds) if seconds else None
            dm = variant.get("delta_m") or {}
            cell = "baseline" if name == baseline else (
                _fmt(dm.get("mean"), 2) + (f"\n{_interval(dm.get('low'), dm.get('high'))}" if dm.get("low") is not None
                                           else ""))
            summary.add_row(name, cell, f"{raw.get('parameters', 0):,}", _fmt(mean_seconds, 1),
                            _fmt(raw.get("inference_seconds"), 3))
        console.print(summary)
    _print_groupings(compare, variants)
    _print_auxiliary_effects(result)
    _print_curve_signals(compare, variants, baseline)
    _print_notes(compare, result, worse, undefined, unstable)
    console.print(f"run directory: {compare['run_dir']}", soft_wrap=True, highlight=False)


def _print_groupings(compare: dict[str, Any], variants: dict[str, Any]) -> None:
    from taskloom.evaluate.verdict import analyze

    for n, grouping in (compare.get("groupings") or {}).items():
        groups = " | ".join("{" + ", ".join(g) + "}" for g in grouping["groups"])
        console.print(f"TAG grouping into {n} networks (score {grouping['score']:.3g}): {groups}", highlight=False)
        raw = compare["variants"].get(f"groups-{n}", {})
        reference = f"{raw.get('architecture')}+{raw.get('balancing')}"
        if reference in compare["variants"]:
            against = analyze({**compare, "baseline": reference, "analysis": None},
                              compare.get("run_dir"))["variants"][f"groups-{n}"]["delta_m"]
            console.print(f"  groups-{n} vs all-in-one {reference}: delta-m {_fmt(against.get('mean'), 2)} % "
                          f"{_interval(against.get('low'), against.get('high'))}; vs single-task: "
                          f"{_fmt(variants[f'groups-{n}']['delta_m'].get('mean'), 2)} %", highlight=False)


def _print_auxiliary_effects(result: dict[str, Any]) -> None:
    """Per (auxiliary, main task): the metric with and without it, the change % with its interval, the verdict."""
    effects = result.get("auxiliary") or []
    if not effects:
        return
    table = Table(title=f"auxiliary tasks: {effects[0]['reference']} with vs without each")
    for column, justify in (("auxiliary", "left"), ("main task", "left"), ("with", "right"), ("without", "right"),
                            ("change % [95% CI]", "right"), ("verdict", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for effect in effects:
        for k, (task, row) in enumerate(effect["tasks"].items()):
            colour = {"helps": "green", "hurts": "red"}.get(row.get("verdict", ""), "white")
            table.add_row(effect["auxiliary"] if k == 0 else "", task, _fmt(row.get("with")),
                          _fmt(row.get("without")), _change_cell(row), f"[{colour}]{row.get('verdict', '')}[/]")
        dm = effect.get("delta_m") or {}
        table.add_row("", "delta-m", "", "", _change_cell({"relative_change": dm.get("mean"), "low": dm.get("low"),
                                                          "high": dm.get("high")}), dm.get("verdict", ""))
        table.add_section()
    console.print(table)


def _print_curve_signals(compare: dict[str, Any], variants: dict[str, Any], baseline: str | None) -> None:
    """Bingel & Sogaard (2017)'s learning-curve signals of the single-task models beside each variant's gain."""
    signals = compare.get("curve_signals") or {}
    if not signals:
        return
    gains = [n for n in variants if n != baseline]
    table = Table(title="single-task learning curves (Bingel & S\u00f8gaard 2017) and each variant's gain %")
    fractions = [f for f in next(iter(signals.values()))["relative_slopes"] if float(f) in (0.1, 0.3, 0.5)]
    for column in ["task"] + [f"slope@{float(f):.0%}" for f in fractions] + ["plateau", "gain %"]:
        table.add_column(column, justify="left" if column in ("task", "gain %") else "right", overflow="fold")
    for task, entry in signals.items():
        cells = [f"{entry['relative_slopes'][f]:+.3f}" for f in fractions]
        gain = "\n".join(f"{n} {_fmt(variants[n]['tasks'][task].get('relative_change'), 2)}" for n in gains
                         if task not in (compare["variants"][n].get("without") or []))
        table.add_row(task, *cells, f"{entry['plateau_epoch']}/{entry['epochs']}", gain)
    console.print(table)


def _print_notes(compare: dict[str, Any], result: dict[str, Any], worse: bool, undefined: bool,
                 unstable: bool) -> None:
    """What the intervals cover, what delta-m left out, and every flag shown in the tables."""
    rows = [r for v in result["variants"].values() for r in v["tasks"].values()]
    covered = next((r for r in rows if r.get("covers")), None)
    if covered:
        console.print(f"intervals: {covered['covers']}; {covered['test']}. helps / hurts only when the 95% "
                      "interval excludes 0.", highlight=False)
    for name, variant in result["variants"].items():
        for task, why in ((variant.get("delta_m") or {}).get("left_out") or {}).items():
            console.print(f"delta-m of {name} leaves out {task}: {why}", highlight=False)
    for split, entries in (compare.get("evaluation") or {}).items():
        if split == "per_split":
            continue
        for task, entry in entries.items():
            if not entry.get("defined", True) and split == "val":
                console.print(f"validation split cannot measure {task}: {entry['reason']}", highlight=False)
    if undefined:
        console.print("undefined: the test split cannot measure that task (see the warnings above).")
    if worse:
        console.print("! worse than the trivial predictor (training mean / class prior): that model learned "
                      "nothing usable for the task.")
    if unstable:
        for name, variant in result["variants"].items():
            for task, row in variant["tasks"].items():
                if row.get("unstable"):
                    console.print(f"* {task} ({name}): {row['unstable']}", highlight=False)
    changed = [(n, t, r["seed_only"]["verdict"], r["verdict"]) for n, v in result["variants"].items()
               for t, r in v["tasks"].items() if r.get("seed_only") and r["seed_only"]["verdict"] != r.get("verdict")
               and r["seed_only"]["verdict"] in ("helps", "hurts")]
    for name, task, before, after in changed:
        console.print(f"{task} ({name}): a seed-only t-test would say '{before}'; with the test set's noise "
                      f"it is '{after}'", highlight=False)


def command_affinity(args: argparse.Namespace) -> int:
    from taskloom.evaluate.grouping import missing_pairs, select_groups
    from taskloom.evaluate.logged import mean_logged_matrix, read_records

    run_dir = Path(args.run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no metrics.jsonl; pass the directory a run wrote")
    if args.groups < 1:
        raise ConfigError(f"--groups: need at least 1 network, got {args.groups}")
    records = read_records(path)
    if (run_dir / "grid.json").is_file():  # a compare run: every seed of one variant (the grouping one by default)
        from taskloom.train.grid import GridSpec, variant_records

        spec = GridSpec(**json.loads((run_dir / "grid.json").read_text()))
        records = variant_records(run_dir, spec, args.model or spec.grouping_variant)
    affinity, epochs = mean_logged_matrix(records, "affinity", None if (run_dir / "grid.json").is_file() else args.model)
    if not epochs:
        raise ConfigError(f"{path} holds no affinity; train with tracking: {{measure: [affinity]}} in the config "
                          "(or taskloom compare --track affinity)")
    names = list(affinity)
    table = Table(title=f"TAG lookahead affinity Z[row -> column], mean over {epochs} logged epochs "
                        "(Fifty et al. 2021; positive: a step on the row task lowers the column task's loss)")
    table.add_column("from \\ onto")
    for name in names:
        table.add_column(name, justify="right")
    for a in names:
        table.add_row(a, *[("" if a == b or affinity[a][b] is None else f"{affinity[a][b]:+.3g}") for b in names])
    console.print(table)
    conflict, conflict_epochs = mean_logged_matrix(records, "conflict", args.model)
    if conflict_epochs:
        table = Table(title=f"gradient cosine similarity on the shared parameters, mean over {conflict_epochs} epochs")
        table.add_column("")
        for name in conflict:
            table.add_column(name, justify="right")
        for a in conflict:
            table.add_row(a, *[_fmt(conflict[a][b], 3) for b in conflict])
        console.print(table)
    groupings = Table(title="suggested task groupings (TAG network selection, exact search)")
    for column in ("networks", "score", "groups"):
        groupings.add_column(column, justify="right" if column != "groups" else "left")
    missing = missing_pairs(affinity, names)
    if missing:
        console.print(f"note: no affinity was measured for {len(missing)} ordered pairs "
                      f"({', '.join(f'{a}->{b}' for a, b in missing[:6])}{', ...' if len(missing) > 6 else ''}); "
                      "the grouping leaves them out (they neither help nor hurt a group)")
    for n in range(1, min(args.groups, len(names)) + 1):
        grouping = select_groups(affinity, n, names, allow_missing=bool(missing))
        groupings.add_row(str(n), f"{grouping.score:.3g}", " | ".join("{" + ", ".join(g) + "}" for g in grouping.groups))
    console.print(groupings)
    return 0


def command_report(args: argparse.Namespace) -> int:
    from taskloom.report import write_report

    path = write_report(args.run_dir)
    console.print(f"report: {path}", soft_wrap=True, highlight=False)
    return 0


def command_list(args: argparse.Namespace) -> int:
    import taskloom.balancing as balancing
    import taskloom.data.datasets as datasets
    import taskloom.sharing as sharing
    import taskloom.task as task
    import taskloom.trunks as trunks

    groups = {
        "data sets": datasets.DATASETS, "task kinds": task.TASK_KINDS, "architectures": sharing.ARCHITECTURES,
        "trunks": trunks.TRUNKS, "balancing methods": balancing.BALANCERS,
    }
    try:
        from taskloom.regularizers import REGULARIZERS

        groups["regularizers"] = REGULARIZERS
    except ImportError:
        pass
    for title, registry in groups.items():
        table = Table(title=title, show_header=False, title_justify="left")
        for name, summary in registry.summaries().items():
            table.add_row(name, summary)
        console.print(table)
    console.print("a data set's options and their defaults: taskloom describe DATASET", highlight=False)
    return 0


def command_describe(args: argparse.Namespace) -> int:
    from taskloom.data.datasets import DATASETS, describe_options

    if args.dataset not in DATASETS:
        raise ConfigError(f"unknown data set {args.dataset!r}; known: {', '.join(DATASETS)}")
    table = Table(title=f"options of the {args.dataset} data set (data.options in a config)", title_justify="left")
    for column in ("option", "default", "description"):
        table.add_column(column, overflow="fold")
    for row in describe_options(args.dataset):
        table.add_row(row["option"], row["default"], row["description"])
    console.print(table)
    return 0


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: when not given after the command, the value given before it (taskloom -v train) is kept
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="one line per epoch: validation metrics and the score that selects checkpoints")


def _default_out(args: argparse.Namespace) -> Path:
    if args.input:
        return Path(f"{Path(args.input).stem}-predictions.csv")
    return Path(f"{args.split}-predictions.csv")


def command_predict(args: argparse.Namespace) -> int:
    from taskloom.serve.predictor import load
    from taskloom.serve.stream import predict_file, predict_split

    if (args.input is None) == (args.split is None):
        raise ConfigError("taskloom predict needs exactly one of INPUT (a CSV or Parquet file) or --split SPLIT")
    if args.input is not None and not Path(args.input).is_file():
        raise FileNotFoundError(f"input file {args.input!r} does not exist")
    predictor = load(args.run_dir, checkpoint=args.checkpoint, unknown=args.unknown_categories,
                     include_auxiliary=args.include_auxiliary)
    out = args.out or _default_out(args)
    tasks = _names(args.tasks)
    if args.split is not None:
        rows = predict_split(predictor, args.split, out, tasks)
    else:
        with _progress() as progress:
            unit = "rows" if str(args.input).lower().endswith((".parquet", ".pq")) else "bytes read"
            bar = progress.add_task(f"predicting {args.input} ({unit})", total=None)
            rows = predict_file(predictor, args.input, out, tasks, args.batch_size,
                                lambda done, total: progress.update(bar, completed=done, total=total))
    console.print(f"{rows:,} rows predicted for {', '.join(predictor.pick_tasks(tasks))} "
                  f"({predictor.model_dir}, checkpoint {predictor.checkpoint}): {out}", soft_wrap=True,
                  highlight=False)
    return 0


def command_export(args: argparse.Namespace) -> int:
    from taskloom.serve.export import example_inputs, export_onnx, max_abs_difference
    from taskloom.serve.predictor import load

    predictor = load(args.run_dir, checkpoint=args.checkpoint, include_auxiliary=args.include_auxiliary)
    if args.format == "torch-export":
        from taskloom.serve.export import export_program

        path = export_program(predictor, args.out or predictor.model_dir / "model.pt2")
        console.print(f"torch.export program: {path} (load with torch.export.load(path).module(); outputs "
                      f"{', '.join(predictor.output_names)}; dynamic batch); preprocessing and tasks: {path}.json",
                      soft_wrap=True, highlight=False)
        return 0
    out = args.out or predictor.model_dir / "model.onnx"
    path = export_onnx(predictor, out)
    console.print(f"ONNX graph: {path} (outputs {', '.join(predictor.output_names)}; dynamic batch); "
                  f"preprocessing and tasks: {path}.json", soft_wrap=True, highlight=False)
    try:
        differences = max_abs_difference(predictor, path, example_inputs(predictor, rows=64, seed=1))
    except ImportError:
        return 0
    except ValueError as error:  # onnxruntime missing: the graph is written, only the check is skipped
        console.print(f"note: {error}", highlight=False)
        return 0
    worst = max(differences.values())
    console.print(f"onnxruntime vs PyTorch on 64 random rows: max abs difference {worst:.3g}", highlight=False)
    return 0


def command_serve(args: argparse.Namespace) -> int:
    try:
        from taskloom.serve.app import ServeLimits, serve
    except ImportError as error:
        raise ConfigError(f'taskloom serve needs FastAPI and uvicorn: pip install "taskloom[serve]" '
                          f"({error})") from None
    from taskloom.serve.predictor import load

    predictor = load(args.run_dir, checkpoint=args.checkpoint, unknown=args.unknown_categories,
                     include_auxiliary=args.include_auxiliary)
    limits = ServeLimits(max_body_bytes=args.max_body_bytes, max_batch_rows=args.max_batch,
                         max_wait_ms=args.max_wait_ms, max_pending=args.max_queue)
    console.print(f"serving {predictor.model_dir} (checkpoint {predictor.checkpoint}) on "
                  f"http://{args.host}:{args.port}  (POST /predict, GET /health, GET /metadata, docs at /docs)",
                  soft_wrap=True, highlight=False)
    serve(predictor, args.host, args.port, limits)
    return 0


def _add_nproc(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc", type=int, metavar="N",
                        help="data-parallel training on N processes (torchrun; gloo on CPU, NCCL on CUDA)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskloom", description="Multi-task learning for PyTorch.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each epoch's details")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="single-task models vs one multi-task model (default: built-in MultiMNIST)")
    run.add_argument("config", nargs="?", help="a YAML config; without it the built-in MultiMNIST job runs")
    run.add_argument("--epochs", type=int, help="override train.epochs")
    run.add_argument("--output", type=Path, help="override output_dir")
    run.add_argument("--device", help="override train.device (cpu, cuda)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run; finished models are kept")
    _add_nproc(run)
    _add_verbose(run)
    run.set_defaults(func=command_run)

    train = sub.add_parser("train", help="train the multi-task model a YAML config describes")
    train.add_argument("config", nargs="?", help="the YAML config")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--baselines", action="store_true", help="also train single-task baselines and compare")
    train.add_argument("--epochs", type=int, help="override train.epochs")
    train.add_argument("--output", type=Path, help="override output_dir")
    train.add_argument("--device", help="override train.device (cpu, cuda)")
    train.add_argument("--auxiliary-ablations", action=argparse.BooleanOptionalAction, default=None,
                       help="also train the model without each auxiliary task (and without all) to judge "
                            "whether it helps; default: train.auxiliary_ablations (on)")
    _add_nproc(train)
    _add_verbose(train)
    train.set_defaults(func=command_train)

    compare = sub.add_parser("compare", help="single-task baselines vs a grid of multi-task variants over seeds")
    compare.add_argument("config", nargs="?", help="the YAML config (the settings every model shares)")
    compare.add_argument("--methods", help="comma-separated balancing methods (ew = equal, uw = uncertainty); "
                                           "default: the config's")
    compare.add_argument("--architectures", help="comma-separated sharing architectures; default: the config's")
    compare.add_argument("--seeds", type=int, help="number of seeds, from train.seed on (default 3)")
    compare.add_argument("--track", help="log per-epoch analysis of the multi-task models: conflict, affinity")
    compare.add_argument("--groups", help="comma-separated numbers of networks: train TAG's suggested task groups "
                                          "(implies affinity tracking of the first variant)")
    compare.add_argument("--splits", type=int, help="repeat the grid over N seeded train/val/test splits "
                                                    "(data.split_seed, +1, ...); default 1")
    compare.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted grid; finished cells are kept")
    compare.add_argument("--epochs", type=int, help="override train.epochs")
    compare.add_argument("--output", type=Path, help="override output_dir")
    compare.add_argument("--device", help="override train.device (cpu, cuda)")
    compare.add_argument("--auxiliary-ablations", action=argparse.BooleanOptionalAction, default=None,
                       help="also train the model without each auxiliary task (and without all) to judge "
                            "whether it helps; default: train.auxiliary_ablations (on)")
    _add_nproc(compare)
    _add_verbose(compare)
    compare.set_defaults(func=command_compare)

    auto = sub.add_parser("auto", help="search architecture, balancing, groups, auxiliary weights and learning "
                                       "rate on validation (Optuna; needs taskloom[auto]), then judge the winner")
    auto.add_argument("config", nargs="?", help="the YAML config (the settings every trial shares)")
    auto.add_argument("--budget", help="search time, e.g. 30m, 2h, 90s (stops at --budget or --trials, first)")
    auto.add_argument("--trials", type=int, help="number of trials this call runs (0 with --resume: only the "
                                                 "final stage)")
    auto.add_argument("--architectures", help="comma-separated candidates (default: hard,mmoe,ple)")
    auto.add_argument("--methods", help="comma-separated balancing methods (default: equal,uncertainty,dwa,famo,"
                                        "pcgrad,upgrad)")
    auto.add_argument("--groups", help="comma-separated numbers of task groups chosen by TAG affinity (default 1)")
    auto.add_argument("--lr", help="learning-rate range LOW,HIGH searched log-uniformly (default 1e-4,1e-1)")
    auto.add_argument("--pruner", default="halving", help="halving (successive halving; default), hyperband or none")
    auto.add_argument("--seeds", type=int, help="seeds of the final stage (default 3; on --resume the run's)")
    auto.add_argument("--storage", help="Optuna storage URL (default: sqlite in the run directory)")
    auto.add_argument("--run-dir", type=Path, help="the run directory (default: a new one in output_dir)")
    auto.add_argument("--resume", metavar="RUN_DIR", help="continue the study of an auto run directory")
    auto.add_argument("--search-only", action="store_true", help="stop after the search (a worker of a shared study)")
    auto.add_argument("--epochs", type=int, help="override train.epochs")
    auto.add_argument("--output", type=Path, help="override output_dir")
    auto.add_argument("--device", help="override train.device (cpu, cuda)")
    _add_verbose(auto)
    auto.set_defaults(func=command_auto)

    affinity = sub.add_parser("affinity", help="the task affinity logged in a run, and suggested task groupings")
    affinity.add_argument("run_dir", help="a run directory whose metrics.jsonl holds affinity")
    affinity.add_argument("--groups", type=int, default=3, help="suggest groupings for 1..N networks (default 3)")
    affinity.add_argument("--model", help="only this model's records (e.g. hard+equal); default: all")
    affinity.set_defaults(func=command_affinity)

    report = sub.add_parser("report", help="write RUN_DIR/report.html (self-contained)")
    report.add_argument("run_dir", help="a run directory")
    report.set_defaults(func=command_report)

    checkpoint_help = "best (default; last when the run had no validation split), last, or best-TASK"
    auxiliary_help = "also predict the auxiliary tasks (role: auxiliary); by default only the main tasks"
    unknown_help = "a category never seen in training: zeros (all-zero one-hot, as in training; default) or error"
    predict = sub.add_parser("predict", help="predict new rows (CSV / Parquet) or a split with a trained run")
    predict.add_argument("run_dir", help="a run directory (its multitask model) or a model directory in it")
    predict.add_argument("input", nargs="?", help="a CSV or Parquet file of raw rows; other columns pass through")
    predict.add_argument("--split", choices=["train", "val", "test"], help="predict the run's own data set split")
    predict.add_argument("--out", type=Path, help="output CSV or Parquet (default INPUT-predictions.csv)")
    predict.add_argument("--tasks", help="comma-separated tasks to write (default: all main tasks)")
    predict.add_argument("--include-auxiliary", action="store_true", help=auxiliary_help)
    predict.add_argument("--checkpoint", help=checkpoint_help)
    predict.add_argument("--batch-size", type=int, default=8192, help="rows read and predicted at a time")
    predict.add_argument("--unknown-categories", choices=["zeros", "error"], default="zeros", help=unknown_help)
    predict.set_defaults(func=command_predict)

    export = sub.add_parser("export", help="export a trained model to ONNX (preprocessing saved beside it)")
    export.add_argument("run_dir", help="a run directory or a model directory in it")
    export.add_argument("--format", choices=["onnx", "torch-export"], default="onnx",
                        help="onnx (default) or torch-export (a torch.export program, .pt2)")
    export.add_argument("--out", type=Path, help="the graph's path (default MODEL_DIR/model.onnx or model.pt2)")
    export.add_argument("--checkpoint", help=checkpoint_help)
    export.add_argument("--include-auxiliary", action="store_true", help=auxiliary_help)
    export.set_defaults(func=command_export)

    serve = sub.add_parser("serve", help="serve a trained table model over HTTP (FastAPI; needs taskloom[serve])")
    serve.add_argument("run_dir", help="a run directory or a model directory in it")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--checkpoint", help=checkpoint_help)
    serve.add_argument("--include-auxiliary", action="store_true", help=auxiliary_help)
    serve.add_argument("--unknown-categories", choices=["zeros", "error"], default="zeros", help=unknown_help)
    serve.add_argument("--max-batch", type=int, default=256, help="rows per micro-batched forward pass")
    serve.add_argument("--max-wait-ms", type=float, default=2.0, help="longest wait for a micro-batch to fill")
    serve.add_argument("--max-queue", type=int, default=256, help="pending requests before answering 503")
    serve.add_argument("--max-body-bytes", type=int, default=1_048_576, help="larger bodies get 413")
    serve.set_defaults(func=command_serve)

    listing = sub.add_parser("list", help="list data sets, task kinds, architectures and balancing methods")
    listing.set_defaults(func=command_list)

    describe = sub.add_parser("describe", help="a data set's options with their defaults")
    describe.add_argument("dataset", help="a data set name (taskloom list shows them)")
    describe.set_defaults(func=command_describe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("taskloom.data.report").setLevel(logging.INFO)  # what a table run chose: always shown
    from taskloom.train.trainer import TrainingDiverged

    try:
        return args.func(args)
    except TrainingDiverged as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 3
    except (ConfigError, ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # paths stay whole
        return 2


if __name__ == "__main__":
    sys.exit(main())
