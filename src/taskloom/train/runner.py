"""From a config to the pieces of a run: data, tasks, model, balancing, trainer, run directory.

The orchestration (which models a run trains, and what it writes) is one path,
:func:`taskloom.train.grid.run_grid`; ``run_training`` and ``run_comparison`` here are its
one-seed forms, kept for the Python API.
"""
from __future__ import annotations

import datetime as _dt
import inspect
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from taskloom.balancing import build_balancer
from taskloom.config import Config, ConfigError, dump_config, load_config
from taskloom.data.dataset import DataSplits
from taskloom.data.datasets import DATASETS, load_dataset
from taskloom.sharing import ARCHITECTURES
from taskloom.sharing.base import MultiTaskModule
from taskloom.task import Condition, Task
from taskloom.train.score import SelectionScore
from taskloom.train import distributed
from taskloom.train.curriculum import build_curriculum
from taskloom.train.trainer import Trainer
from taskloom.train.tracking import build_monitors
from taskloom.trunks import TRUNKS

log = logging.getLogger(__name__)

Callbacks = dict[str, Callable[..., None]]


def tasks_from_config(config: Config) -> list[Task] | None:
    """The config's tasks as :class:`Task` objects (None: the data set's default tasks)."""
    if config.tasks is None:
        return None
    out = []
    for i, spec in enumerate(config.tasks):
        try:
            out.append(Task(
                name=spec.name, kind=spec.kind, num_outputs=spec.num_outputs, target=spec.target,
                class_weights=spec.class_weights, main_metric=spec.main_metric, head_hidden=tuple(spec.head_hidden),
                sample_weight=spec.sample_weight, transform=spec.target_transform(), role=spec.role,
                only_where=None if spec.only_where is None else Condition(spec.only_where.task, spec.only_where.equals),
            ))
        except ValueError as error:
            raise ConfigError(f"tasks[{i}]: {error}") from None
    from taskloom.data.auxiliaries import feature_task

    out += [feature_task(a.column, a.task_kind, a.num_outputs, a.task_name)
            for a in config.auxiliaries if a.kind == "feature"]
    return out


def table_columns(path: str | Path) -> list[str]:
    """The column names of a CSV or Parquet file, read without loading its rows; errors name the file."""
    from taskloom.data.datasets.table import table_columns as read_columns

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.options.path: {str(path)!r} does not exist")
    try:
        return read_columns(path)
    except ValueError as error:
        raise ConfigError(f"data.options.path: {error}") from None


def check_table_targets(config: Config) -> None:
    """Refuse a task whose target column (or sample-weight column) is not in the table, naming the field."""
    path = config.data.options.get("path")
    if config.data.dataset == "table" and not config.data.sources:
        check_columns(path, list(enumerate(config.tasks or [])))


def check_columns(path: Any, specs: list[tuple[Any, Any]], field: str | None = None) -> None:
    """Each ``(index, task config)``'s target and sample-weight columns must be in the table at ``path``.

    With ``field`` (e.g. ``column``), each spec's ``field`` is checked instead and its index is its path.
    """
    if not isinstance(path, (str, Path)):
        return
    columns = table_columns(path)
    for i, task in specs:
        pairs = (("target", task.target), ("sample_weight", task.sample_weight)) if field is None else \
            ((field, getattr(task, field)),)
        where = f"tasks[{i}]" if field is None else str(i)
        for name, column in pairs:
            if column is not None and column not in columns:
                raise ConfigError(f"{where}.{name}: column {column!r} is not in the table {path}; "
                                  f"its columns are {columns}")


def load_data(config: Config) -> DataSplits:
    """Load the configured data set (or sources) with the configured tasks and split."""
    if config.data.sources:
        return load_sources(config)
    if config.data.dataset not in DATASETS:
        raise ConfigError(f"data.dataset: unknown data set {config.data.dataset!r}; known: {', '.join(DATASETS)}")
    if config.data.streaming:
        return load_streamed(config)
    check_table_targets(config)
    options = dict(config.data.options)
    withheld = [a.column for a in config.auxiliaries if a.kind == "feature"]
    if withheld:
        from taskloom.data.auxiliaries import withheld_features

        check_columns(options.get("path"), [(f"auxiliaries[{i}]", a) for i, a in enumerate(config.auxiliaries)
                                            if a.kind == "feature"], "column")
        if "features" in options:
            options["features"] = withheld_features(options["features"], withheld)
    keyed = {"split_key": config.data.split.key} if config.data.split.key is not None else {}
    splits = load_dataset(
        config.data.dataset,
        tasks=tasks_from_config(config),
        val_fraction=config.data.val_fraction,
        test_fraction=config.data.test_fraction,
        seed=config.data.split_seed,
        stratify=config.data.split.stratify,
        **keyed,
        **options,
    )
    return add_reconstruction(config, splits)


def add_reconstruction(config: Config, splits: DataSplits) -> DataSplits:
    """The ``auxiliaries`` of kind reconstruct added to the loaded splits, regression feature targets standardized
    (see taskloom.data.auxiliaries)."""
    from taskloom.data.auxiliaries import add_reconstruction as add
    from taskloom.data.auxiliaries import standardize_feature_target

    for i, auxiliary in enumerate(config.auxiliaries):
        if auxiliary.kind == "feature" and auxiliary.task_kind == "regression":
            try:
                standardize_feature_target(splits, auxiliary.task_name)
            except ValueError as error:
                raise ConfigError(f"auxiliaries[{i}]: {error}") from None
        if auxiliary.kind != "reconstruct":
            continue
        try:
            add(splits, auxiliary.mask, auxiliary.seed, auxiliary.task_name)
        except ValueError as error:
            raise ConfigError(f"auxiliaries[{i}]: {error}") from None
    return splits


def load_streamed(config: Config) -> DataSplits:
    """The table of ``data.options.path`` read in record batches (``data.streaming``; see taskloom.data.streaming)."""
    from taskloom.data.streaming import load_streaming_table

    options = dict(config.data.options)
    if "frame" in options:
        raise ConfigError("data.options.frame: streaming reads a file or directory; give data.options.path")
    stream = config.data.streaming_options
    try:
        return load_streaming_table(
            tasks_from_config(config) or [], options.pop("path"), val_fraction=config.data.val_fraction,
            test_fraction=config.data.test_fraction, seed=config.data.split_seed, key=config.data.split.key,
            reference_rows=stream.reference_rows, read_rows=stream.read_rows, **options,
        )
    except TypeError as error:
        raise ConfigError(f"data.options: {error}") from None


def load_sources(config: Config) -> DataSplits:
    """Each of ``data.sources`` with its own tasks, combined into one split set (see taskloom.data.sources)."""
    from taskloom.data.sources import combine_sources

    tasks = tasks_from_config(config) or []
    tables = [s.name for s in config.data.sources or [] if s.dataset == "table"]
    owner = [spec.source or tables[0] for spec in config.tasks or []]  # the config checks a table is named
    loaded = {}
    for i, source in enumerate(config.data.sources or []):
        field = f"data.sources[{i}]"
        if source.dataset not in DATASETS:
            raise ConfigError(f"{field}.dataset: unknown data set {source.dataset!r}; known: {', '.join(DATASETS)}")
        own = [j for j, name in enumerate(owner) if name == source.name]
        if source.dataset == "table":
            check_columns(source.options.get("path"), [(j, config.tasks[j]) for j in own])
        try:
            splits = load_dataset(source.dataset, tasks=[tasks[j] for j in own] or None,
                                  val_fraction=config.data.val_fraction, test_fraction=config.data.test_fraction,
                                  seed=config.data.split_seed, stratify=config.data.split.stratify,
                                  **source.options)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{field} ({source.name}): {error}") from None
        if source.tasks is not None:
            unknown = sorted(set(source.tasks) - {t.name for t in splits.tasks})
            if unknown:
                raise ConfigError(f"{field}.tasks: {unknown} are not tasks of {source.dataset}; "
                                  f"it has {[t.name for t in splits.tasks]}")
            splits.tasks = [t for t in splits.tasks if t.name in source.tasks]
        loaded[source.name] = splits
    try:
        return combine_sources(loaded)
    except ValueError as error:
        raise ConfigError(f"data.sources: {error}") from None


def trunk_factory(config: Config, splits: DataSplits) -> Callable[[], nn.Module]:
    """A function returning a fresh trunk; shape arguments the trunk accepts are filled from the data."""
    options = trunk_arguments(config, splits)
    cls = TRUNKS.get(config.model.trunk.name)
    return lambda: cls(**options)


def trunk_arguments(config: Config, splits: DataSplits) -> dict[str, Any]:
    """The trunk's keyword arguments: shape arguments it accepts filled from the data, then the config's options."""
    if config.model.trunk.name not in TRUNKS:
        raise ConfigError(f"model.trunk.name: unknown trunk {config.model.trunk.name!r}; known: {', '.join(TRUNKS)}")
    cls = TRUNKS.get(config.model.trunk.name)
    accepted = inspect.signature(cls).parameters
    inferred: dict[str, Any] = {
        "in_features": splits.in_features,
        "image_size": splits.input_shape[-1],
        "channels": splits.input_shape[0] if len(splits.input_shape) == 3 else 1,
    }
    inferred.update({k: v for k, v in splits.info.get("trunk_arguments", {}).items()})
    options = {k: v for k, v in inferred.items() if k in accepted}
    options.update(config.model.trunk.options)
    unknown = sorted(set(config.model.trunk.options) - set(accepted))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        raise ConfigError(f"model.trunk.options: {config.model.trunk.name} does not take {unknown}; "
                          f"it takes {sorted(accepted)}")
    return options


def build_model(config: Config, tasks: list[Task], splits: DataSplits, single_task: bool = False) -> MultiTaskModule:
    """The configured architecture over ``tasks``; a single-task baseline is always the plain trunk and head."""
    if config.model.architecture not in ARCHITECTURES:
        raise ConfigError(f"model.architecture: unknown architecture {config.model.architecture!r}; "
                          f"known: {', '.join(ARCHITECTURES)}")
    if single_task:
        return ARCHITECTURES.get("hard")(trunk_factory(config, splits), tasks)
    builder = ARCHITECTURES.get(config.model.architecture)
    model = builder(trunk_factory(config, splits), tasks, **config.model.options)
    if keeps_per_task_models(config):
        from taskloom.sharing.per_task import PerTaskModels

        model = PerTaskModels(model)
    return model


def keeps_per_task_models(config: Config) -> bool:
    """True when the multi-task model answers each task with its own copy (``curriculum.keep: per_task``)."""
    section = config.curriculum
    return section is not None and section.mode == "sequential" and section.keep == "per_task"


def build_trainer(config: Config, tasks: list[Task], splits: DataSplits, run_dir: Path | None,
                  model_name: str = "multitask", balancing: bool = True,
                  callbacks: Callbacks | None = None, baselines: Mapping[str, float] | None = None) -> Trainer:
    """A trainer for ``tasks`` (all of them, or one for a single-task baseline) with the config's settings.

    ``baselines`` (task -> main metric) replaces ``selection.baselines`` for the selection score.
    """
    torch.manual_seed(config.train.seed)
    model = build_model(config, tasks, splits, single_task=not balancing)
    names = [t.name for t in tasks]
    if balancing:
        balancer = build_balancer_with_auxiliaries(config, tasks)
    else:
        balancer = build_balancer("equal", names)
    selection = SelectionScore(
        tasks, config.selection.score if balancing else "task",
        weights=config.selection.weights, task=config.selection.task if balancing else names[0],
        baselines=config.selection.baselines if baselines is None else baselines,
    )
    regularizers = []
    if balancing and config.regularizers:
        from taskloom.regularizers import REGULARIZERS

        regularizers = [REGULARIZERS.get(r.name)(model, **r.options) for r in config.regularizers]
    callbacks = callbacks or {}
    monitors = build_monitors(config, tasks, run_dir, model_name, multitask=balancing)
    curriculum = None
    if balancing:
        curriculum = build_curriculum(config, names, config.train.epochs, config.train.seed, model,
                                      all_tasks=[t.name for t in splits.tasks])
    return Trainer.from_config(config, model, tasks, balancer, selection=selection, regularizers=regularizers,
                               run_dir=run_dir, model_name=model_name, monitors=monitors,
                               on_step=callbacks.get("step"), on_epoch_end=callbacks.get("epoch"),
                               communicator=distributed.active(), curriculum=curriculum)


def auxiliary_specs(config: Config, tasks: list[Task]) -> dict[str, Any]:
    """Per auxiliary task of ``tasks`` with an ``auxiliary`` block in the config, its weighting spec."""
    from taskloom.balancing.auxiliary_weighting import AuxiliarySpec

    present = {t.name for t in tasks if t.role == "auxiliary"}
    blocks = {spec.name: spec.auxiliary for spec in config.tasks or [] if spec.auxiliary is not None}
    blocks.update({auxiliary.task_name: auxiliary for auxiliary in config.auxiliaries})
    return {name: AuxiliarySpec(block.weight, block.schedule, block.gating)
            for name, block in blocks.items() if name in present}


def build_balancer_with_auxiliaries(config: Config, tasks: list[Task]) -> Any:
    """The configured balancing method; with weighted auxiliary tasks (and a main task), wrapped by
    :class:`~taskloom.balancing.auxiliary_weighting.AuxiliaryWeighting` (the method then sees the main tasks)."""
    names = [t.name for t in tasks]
    specs = auxiliary_specs(config, tasks)
    if not specs or len(specs) == len(names):
        return build_balancer(config.balancing.method, names, **config.balancing.options)
    from taskloom.balancing.auxiliary_weighting import AuxiliaryWeighting

    inner = build_balancer(config.balancing.method, [n for n in names if n not in specs], **config.balancing.options)
    return AuxiliaryWeighting(inner, specs)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters; for per-task copies, every copy's own model whichever stage is active."""
    trained = getattr(model, "trained_parameters", None)
    parameters = trained() if callable(trained) else [p for p in model.parameters() if p.requires_grad]
    return sum(p.numel() for p in parameters)


def new_run_dir(config: Config) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(config.output_dir) / f"{config.name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(config.output_dir) / f"{config.name}-{stamp}-{suffix}"
    return path


def training_data(config: Config, splits: DataSplits, task_names: list[str]) -> Any:
    """The training split, a streamed table's loader, or with several sources a loader mixing them (``data.mixing``)."""
    if "streaming" in splits.info:
        return splits.info["streaming"].loader(config.train.batch_size, config.train.seed,
                                               config.data.streaming_options.shuffle_buffer)
    if "train_sources" not in splits.info:
        return splits.train
    from taskloom.data.sources import mixed_loader

    mixing = config.data.mixing
    return mixed_loader(splits, task_names, config.train.batch_size, config.train.seed, config.train.epochs,
                        strategy=mixing.strategy, temperature=mixing.temperature, cap=mixing.cap,
                        probabilities=mixing.probabilities, homogeneous=mixing.homogeneous)


def write_report_safely(run_dir: Path) -> Path | None:
    """Write RUN_DIR/report.html; a failure to render is logged as a warning, never raised."""
    try:
        from taskloom.report import write_report

        return write_report(run_dir)
    except Exception as error:  # the run's results are already saved: a report problem must not lose them
        log.warning("the HTML report of %s could not be written (%s: %s); run `taskloom report %s` to retry",
                    run_dir, type(error).__name__, error, run_dir)
        return None


def prepare_run(config: Config, run_dir: Path | None, resume: bool) -> tuple[Config, Path]:
    if resume:
        if run_dir is None or not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume needs a run directory holding config.yaml; {run_dir} has none")
        return load_config(run_dir / "config.yaml"), run_dir
    run_dir = run_dir or new_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(config))
    return config, run_dir


def run_training(config: Config, run_dir: Path | None = None, resume: bool = False,
                 callbacks: Callbacks | None = None) -> dict[str, Any]:
    """Train the configured model (and single-task baselines when ``train.baselines``); see ``grid.run_training``."""
    from taskloom.train.grid import run_training as train

    return train(config, run_dir, resume, callbacks)


def run_comparison(config: Config, run_dir: Path | None = None, resume: bool = False,
                   callbacks: Callbacks | None = None) -> dict[str, Any]:
    """Single-task models vs the configured multi-task model, one seed; see ``grid.run_comparison``."""
    from taskloom.train.grid import run_comparison as compare

    return compare(config, run_dir, resume, callbacks)
