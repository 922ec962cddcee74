"""Trainer monitors: per-epoch gradient conflict and TAG affinity, and TensorBoard / MLflow logging.

A monitor is any object with ``before_step(trainer, batch, step)``, ``on_epoch_end(trainer,
record)`` and ``end_fit(trainer)``; the trainer calls them and writes what ``on_epoch_end``
adds to the record into metrics.jsonl. Analysis follows Fifty et al. 2021 (TAG lookahead
affinity) and Yu et al. 2020 (gradient cosine similarity); both are off by default.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from taskloom.config import Config, ConfigError
from taskloom.data.batch import Batch
from taskloom.evaluate.affinity import AffinityTracker
from taskloom.evaluate.conflict import ConflictTracker
from taskloom.losses import task_losses
from taskloom.task import Task

log = logging.getLogger(__name__)

MEASURES = ("conflict", "affinity")


class Monitor:
    """Does nothing; subclasses override the hooks they need."""

    def before_step(self, trainer: Any, batch: Batch, step: int) -> None:
        pass

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        pass

    def end_fit(self, trainer: Any) -> None:
        pass


class AnalysisMonitor(Monitor):
    """Measures conflict and/or affinity every ``every`` steps, before the step, and logs the epoch means.

    The measurement leaves the training untouched: buffers (batch-norm statistics) and the
    random state are restored, and no ``.grad`` is written. Both measures are defined on the
    shared parameters: for a model with none (soft sharing, cross-stitch: one tower per task)
    nothing is measured, one warning is logged, and each epoch record says why under
    ``tracking_skipped``.
    """

    def __init__(self, tasks: Sequence[Task], measure: Sequence[str], every: int = 10) -> None:
        unknown = sorted(set(measure) - set(MEASURES))
        if unknown:
            raise ValueError(f"tracking.measure: unknown {unknown}; choose from {list(MEASURES)}")
        if every < 1:
            raise ValueError(f"tracking.every must be at least 1, got {every}")
        names = [t.name for t in tasks]
        self.tasks = {t.name: t for t in tasks}
        self.every = every
        self.conflict = ConflictTracker(names) if "conflict" in measure else None
        self.affinity = AffinityTracker(names) if "affinity" in measure else None
        self.skipped: str | None = None
        self._checked = False

    def _measurable(self, trainer: Any) -> bool:
        if not self._checked:
            self._checked = True
            shared = getattr(trainer.model, "shared_parameters", None)
            if callable(shared) and not shared():
                self.skipped = (f"{type(trainer.model).__name__} has no shared parameters (each task has its own "
                                "tower), so gradient conflict and task affinity are not defined; not measured")
                log.warning("%s: %s", getattr(trainer, "model_name", "model"), self.skipped)
        return self.skipped is None

    def before_step(self, trainer: Any, batch: Batch, step: int) -> None:
        if step % self.every or not self._measurable(trainer):
            return
        model = trainer.model
        if not model.training:
            model.train()
        if self.conflict is not None:
            buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
            devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
            with torch.random.fork_rng(devices=devices):
                losses = task_losses(model(batch.inputs), batch, self.tasks)
                if len(losses) > 1:
                    self.conflict.measure(model, losses)
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
        if self.affinity is not None:
            self.affinity.measure(model, batch, self.tasks, trainer.optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        if not self._measurable(trainer):
            record["tracking_skipped"] = self.skipped
            return
        for key, tracker in (("conflict", self.conflict), ("affinity", self.affinity)):
            if tracker is not None:
                record[key] = tracker.on_epoch_end()


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of one metrics.jsonl record, flattened to ``kind/task[/metric]`` keys."""
    out: dict[str, float] = {}
    for key in ("train_loss", "val_loss", "weights"):
        for task, value in (record.get(key) or {}).items():
            out[f"{key}/{task}"] = value
    for task, metrics in (record.get("val") or {}).items():
        for metric, value in (metrics or {}).items():
            out[f"val/{task}/{metric}"] = value
    for key in ("score", "lr"):
        out[key] = record.get(key)
    return {k: float(v) for k, v in out.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardMonitor(Monitor):
    """Writes each epoch's per-task losses, metrics and weights as TensorBoard scalars under ``log_dir``."""

    def __init__(self, log_dir: str | Path, prefix: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tracking.tensorboard: the tensorboard package is not installed; "
                              "pip install tensorboard, or set tracking.tensorboard: false") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.prefix = prefix

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(f"{self.prefix}/{key}", value, record["epoch"])
        self.writer.flush()

    def end_fit(self, trainer: Any) -> None:
        self.writer.close()


class MLflowMonitor(Monitor):
    """Logs each epoch's per-task losses, metrics and weights to one MLflow run per trained model."""

    def __init__(self, run_name: str, tracking_uri: str | None, params: Mapping[str, Any]) -> None:
        try:
            import mlflow
        except ImportError:
            raise ConfigError("tracking.mlflow: the mlflow package is not installed; "
                              "pip install mlflow, or set tracking.mlflow: false") from None
        self.mlflow = mlflow
        self.run_name = run_name
        self.tracking_uri = tracking_uri
        self.params = dict(params)
        self.active = False

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        if not self.active:
            if self.tracking_uri:
                self.mlflow.set_tracking_uri(self.tracking_uri)
            self.mlflow.start_run(run_name=self.run_name)
            self.mlflow.log_params(self.params)
            self.active = True
        self.mlflow.log_metrics(scalars(record), step=record["epoch"])

    def end_fit(self, trainer: Any) -> None:
        if self.active:
            self.mlflow.end_run()
            self.active = False


def build_monitors(config: Config, tasks: Sequence[Task], run_dir: Path | None, model_name: str,
                   multitask: bool) -> list[Monitor]:
    """The monitors ``config.tracking`` asks for; conflict and affinity only for models of 2+ tasks."""
    tracking = config.tracking
    monitors: list[Monitor] = []
    if multitask and len(tasks) > 1 and tracking.measure:
        monitors.append(AnalysisMonitor(tasks, tracking.measure, tracking.every))
    if tracking.tensorboard:
        if run_dir is None:
            raise ConfigError("tracking.tensorboard needs a run directory to write its event files in")
        monitors.append(TensorBoardMonitor(run_dir / "tensorboard", model_name))
    if tracking.mlflow:
        params = {"architecture": config.model.architecture, "balancing": config.balancing.method,
                  "seed": config.train.seed, "epochs": config.train.epochs, "model": model_name}
        monitors.append(MLflowMonitor(f"{config.name}/{model_name}", tracking.mlflow_tracking_uri, params))
    return monitors
