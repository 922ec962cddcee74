"""The command line: ``taskloom run | train | list``. The CLI owns the terminal (rich tables and progress)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
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
    """Rich progress bars fed by the trainer's step and epoch callbacks."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(start=self.start, step=self.step, epoch=self.epoch)
        self.progress = progress
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
        epoch = record["epoch"]
        score = record.get("score")
        tail = "" if score is None else f" (score {score:+.2f})"
        self.progress.update(self.task_id, description=f"{self.model} epoch {min(epoch + 1, self.epochs)}/{self.epochs}")
        self.progress.console.log(f"{self.model} epoch {epoch}: {_main_metrics(record)}{tail}")


def _main_metrics(record: dict[str, Any]) -> str:
    parts = []
    for task, metrics in record.get("val", {}).items():
        values = [f"{k} {v:.4f}" for k, v in metrics.items() if v is not None][:2]
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


def print_comparison(comparison: dict[str, Any]) -> None:
    table = Table(title=f"single-task vs multi-task on {comparison['dataset']} (test split)")
    for column in ("task", "metric", "single-task", "multi-task", "relative change %"):
        table.add_column(column, justify="right" if column not in ("task", "metric") else "left")
    for name, row in comparison["tasks"].items():
        arrow = "higher is better" if row["higher_is_better"] else "lower is better"
        table.add_row(name, f"{row['metric']} ({arrow})", _fmt(row["single"]), _fmt(row["multi"]),
                      _fmt(row["relative_change"], 2))
    console.print(table)
    console.print(f"delta-m: {_fmt(comparison['delta_m'], 2)} % (Maninis et al. 2019; positive = multi-task better)")
    params, seconds = comparison["parameters"], comparison["train_seconds"]
    k = len(comparison["tasks"])
    console.print(f"parameters: {k} single-task models {params['single_total']:,} vs one multi-task model "
                  f"{params['multi']:,}")
    console.print(f"training time: {k} single-task models {seconds['single_total']:.1f} s vs one multi-task model "
                  f"{seconds['multi']:.1f} s")
    console.print(f"run directory: {comparison['run_dir']}", soft_wrap=True, highlight=False)


def print_results(summary: dict[str, Any]) -> None:
    table = Table(title=f"multi-task model on {summary['dataset']} (test split)")
    table.add_column("task")
    table.add_column("metrics")
    for name, metrics in summary["test"].items():
        table.add_row(name, ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items()))
    console.print(table)
    console.print(f"parameters {summary['parameters']:,}; training {summary['train_seconds']:.1f} s; "
                  f"best epoch {summary['best_epoch']}")
    console.print(f"run directory: {summary['run_dir']}", soft_wrap=True, highlight=False)


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
    return parse_config(data)


def command_run(args: argparse.Namespace) -> int:
    from taskloom.train.runner import run_comparison

    if args.resume:
        config, run_dir = default_run_config(), Path(args.resume)
    else:
        config = load_config(args.config) if args.config else default_run_config()
        config, run_dir = _apply_overrides(config, args), None
    with _progress() as progress:
        comparison = run_comparison(config, run_dir, resume=bool(args.resume), callbacks=ProgressCallbacks(progress))
    print_comparison(comparison)
    return 0


def command_train(args: argparse.Namespace) -> int:
    from taskloom.train.runner import run_training

    if args.resume:
        config, run_dir = None, Path(args.resume)
    else:
        if not args.config:
            raise ConfigError("taskloom train needs a CONFIG.yaml (or --resume RUN_DIR)")
        config, run_dir = _apply_overrides(load_config(args.config), args), None
    with _progress() as progress:
        result = run_training(config or default_run_config(), run_dir, resume=bool(args.resume),
                              callbacks=ProgressCallbacks(progress))
    if "tasks" in result:
        print_comparison(result)
    else:
        print_results(result)
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
    return 0


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
    run.set_defaults(func=command_run)

    train = sub.add_parser("train", help="train the multi-task model a YAML config describes")
    train.add_argument("config", nargs="?", help="the YAML config")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--baselines", action="store_true", help="also train single-task baselines and compare")
    train.add_argument("--epochs", type=int, help="override train.epochs")
    train.add_argument("--output", type=Path, help="override output_dir")
    train.add_argument("--device", help="override train.device (cpu, cuda)")
    train.set_defaults(func=command_train)

    listing = sub.add_parser("list", help="list data sets, task kinds, architectures and balancing methods")
    listing.set_defaults(func=command_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        console.print(f"[bold red]error:[/] {message}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
