"""The training loop: forward, masked per-task losses, balancing, step, evaluation, checkpoints, logs.

The trainer is a convenience, not a cage: :meth:`Trainer.train_step` is the whole step,
and a user loop can call ``task_losses`` and ``balancer.backward`` directly.

A non-finite task loss stops training with :class:`TrainingDiverged` (naming the task, the
epoch and the step). A resumed run first reads every checkpoint it will need, removes the
temporary files of interrupted writes and cuts ``metrics.jsonl`` back to the checkpointed
epochs, so an epoch interrupted after its record was logged is logged once, not twice.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from taskloom.balancing import Balancer, EqualWeighting
from taskloom.data.batch import Batch
from taskloom.data.dataset import BatchLoader, MultiTaskDataset
from taskloom.evaluate.evaluator import evaluate_model
from taskloom.losses import task_losses
from taskloom.sharing.base import MultiTaskModule
from taskloom.sharing.checkpointing import enable_checkpointing
from taskloom.sharing.hard import predict
from taskloom.task import Task
from taskloom.train.accumulate import accumulated_backward, check_accumulation, step_losses, step_values
from taskloom.train.distributed import Communicator, ShardedLoader, global_task_losses, local_device
from taskloom.train.checkpoint import (
    load_checkpoint, remove_orphan_temporaries, rng_state, save_checkpoint, seed_everything, set_rng_state,
)
from taskloom.train.faults import fault_point
from taskloom.train.json_files import to_json, write_json_atomically
from taskloom.train.options import AMP_MODES, OPTIMIZERS, SCHEDULES, check_choice
from taskloom.train.score import SelectionScore
from taskloom.train.validation_stream import validation_losses

log = logging.getLogger(__name__)


def build_optimizer(parameters: Iterable[nn.Parameter], name: str, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW or SGD (with momentum) over ``parameters``."""
    parameters = list(parameters)
    check_choice("optimizer.name", name, OPTIMIZERS)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)


def build_schedule(optimizer: torch.optim.Optimizer, name: str, epochs: int, steps_per_epoch: int,
                   step_size: int = 10, gamma: float = 0.1, warmup_epochs: int = 0):
    """A per-step learning-rate schedule (cosine to zero, or step decay every ``step_size`` epochs), each after
    an optional linear warm-up; None for a constant rate."""
    total = max(1, epochs * steps_per_epoch)
    warmup = warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if name == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if name == "step":
            return gamma ** ((step // steps_per_epoch) // step_size)
        return 1.0

    check_choice("schedule.name", name, SCHEDULES)
    if name == "none" and warmup == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TrainingDiverged(RuntimeError):
    """A task's training loss, or its gradient, became NaN or infinite: the run stops instead of saving
    meaningless models. ``task``, ``epoch`` and ``step`` say where."""

    def __init__(self, model: str, task: str, value: float, epoch: int, step: int, steps: int, lr: float,
                 reason: str = "") -> None:
        self.model, self.task, self.epoch, self.step = model, task, epoch, step
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"{model}: the training loss of task {task!r} is {value}{detail} at epoch {epoch}, step {step} of "
            f"{steps}; training diverged and was stopped (no checkpoint of this epoch was saved). Lower the "
            f"learning rate (optimizer.lr, now {lr:g}, e.g. to {lr / 10:g}), add a warm-up "
            "(schedule.warmup_epochs) or check this task's targets for extreme values")


@dataclass
class History:
    """Per-epoch records (the lines of metrics.jsonl) and the best epoch by the selection score."""

    records: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float = float("-inf")
    best_per_task: dict[str, float] = field(default_factory=dict)
    epochs_without_improvement: int = 0

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> "History":
        return cls(**json.loads(text))


class Trainer:
    """Trains a :class:`MultiTaskModule` on name-keyed tasks.

    One step: forward once, the masked loss of every labelled task, ``balancer.backward``
    (equal weighting unless given), the architecture's and regularizers' penalties, the
    optimizer step, then proximal steps. Every epoch it evaluates on the validation data,
    logs per-task losses and metrics under the task's name, keeps ``last.pt``, ``best.pt``
    (by the selection score) and ``best-<task>.pt`` (by each task's main metric) in
    ``run_dir/checkpoints`` when a run directory is given (and, at the end of ``fit``, each
    regularizer's final ``report()``, e.g. a learned task covariance, in ``run_dir/regularizers.json``),
    and stops early after ``patience`` epochs without improvement. ``monitors`` (see :mod:`taskloom.train.tracking`)
    are called before each step and at the end of each epoch and of ``fit``. Every per-epoch hook has
    one name, ``on_epoch_end``: the balancer's (mean training losses), the model's (the epoch), each
    monitor's (the trainer and the record) and the ``on_epoch_end`` callback given here (the record).
    With a ``communicator`` (:mod:`taskloom.train.distributed`) it trains data-parallel: each rank takes its
    slice of every batch, the update is the one-process update on the whole batch, and only rank 0 writes.
    ``checkpointing`` recomputes the shared trunk's activations during backward
    (:mod:`taskloom.sharing.checkpointing`); ``accumulate`` N makes each optimizer step from N consecutive
    batches, equal to one step on their concatenation (:mod:`taskloom.train.accumulate`): epochs, the
    schedule, ``on_step`` and the logged losses count optimizer steps, and monitors see a step's first batch.
    A ``curriculum`` (:mod:`taskloom.train.curriculum`) masks the tasks it leaves out of a step, may add a
    penalty and sets the number of epochs; a task counts for selection once it has joined.
    """

    def __init__(
        self,
        model: MultiTaskModule,
        tasks: Sequence[Task],
        balancer: Balancer | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        schedule: str = "none",
        step_size: int = 10,
        gamma: float = 0.1,
        warmup_epochs: int = 0,
        epochs: int = 10,
        batch_size: int = 128,
        seed: int = 0,
        device: str | torch.device = "cpu",
        selection: SelectionScore | None = None,
        patience: int | None = None,
        regularizers: Sequence[Any] = (),
        run_dir: str | Path | None = None,
        model_name: str = "multitask",
        amp: str = "none",
        compile: bool = False,
        on_step: Callable[[int, int], None] | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
        save_task_best: bool = True,
        monitors: Sequence[Any] = (),
        communicator: Communicator | None = None,
        checkpointing: bool = False,
        accumulate: int = 1,
        curriculum: Any = None,
    ) -> None:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        missing = [n for n in names if n not in getattr(model, "task_names", names)]
        if missing:
            raise ValueError(f"the model has no output for tasks {missing}")
        check_choice("train.amp", amp, AMP_MODES)
        check_choice("schedule.name", schedule, SCHEDULES)  # built at the first fit: checked now
        seed_everything(seed)
        self.communicator = communicator
        self.device = torch.device(device) if communicator is None else local_device(device)
        self.model = model.to(self.device)
        self.tasks = {t.name: t for t in tasks}
        self.balancer = (balancer or EqualWeighting(names)).to(self.device)
        if communicator is not None:
            self.balancer.communicator = communicator
            check = getattr(self.balancer, "check_data_parallel", None)
            if callable(check):
                check()
            if not communicator.is_main:  # only rank 0 writes the run directory
                run_dir = None
        check_accumulation(accumulate, self.balancer)
        self.accumulate = accumulate
        if checkpointing:
            enable_checkpointing(self.model)
        self.optimizer_spec = dict(name=optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum)
        self.schedule_spec = dict(name=schedule, step_size=step_size, gamma=gamma, warmup_epochs=warmup_epochs)
        self.curriculum = curriculum  # see taskloom.train.curriculum: which tasks train when
        self.epochs = epochs if curriculum is None else curriculum.total_epochs(epochs)
        self.batch_size = batch_size
        self.seed = seed
        self.selection = selection or SelectionScore(list(tasks))
        self.patience = patience
        self.regularizers = list(regularizers)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.model_name = model_name
        self.amp = amp
        self.on_step = on_step
        self.on_epoch_end = on_epoch_end
        self.save_task_best = save_task_best
        self._synchronized = communicator is None
        self.monitors = list(monitors)  # see taskloom.train.tracking: before_step, on_epoch_end, end_fit
        self.analysis_seconds = 0.0  # this epoch's time in monitors, kept out of its training seconds
        self.forward = torch.compile(self.model) if compile else self.model
        self.step_forward = self._step_forward(compile)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.optimizer = build_optimizer(self.model.parameters(), **self.optimizer_spec)
        balancer_parameters = [p for p in self.balancer.parameters() if p.requires_grad]
        if balancer_parameters:  # learned task weights are not decayed toward zero
            self.optimizer.add_param_group({"params": balancer_parameters, "weight_decay": 0.0})
        self.scheduler = None
        self._schedule_built = False
        self._pending_scheduler_state = None
        self.history = History()
        self.start_epoch = 1

    @classmethod
    def from_config(cls, config: Any, model: MultiTaskModule, tasks: Sequence[Task], balancer: Balancer | None = None,
                    **runtime: Any) -> "Trainer":
        """A trainer built from a config's ``optimizer``, ``schedule`` and ``train`` sections (already validated).

        ``runtime`` holds what no config section says: ``selection``, ``regularizers``, ``run_dir``,
        ``model_name``, ``monitors``, the ``on_step`` / ``on_epoch_end`` callbacks and the ``communicator``
        (data parallelism; see :mod:`taskloom.train.distributed`). ``model.checkpointing`` and
        ``train.accumulate`` come from the model and train sections.
        """
        optimizer, schedule, train = config.optimizer, config.schedule, config.train
        return cls(model, tasks, balancer,
                   optimizer=optimizer.name, lr=optimizer.lr, weight_decay=optimizer.weight_decay,
                   momentum=optimizer.momentum, schedule=schedule.name, step_size=schedule.step_size,
                   gamma=schedule.gamma, warmup_epochs=schedule.warmup_epochs, epochs=train.epochs,
                   batch_size=train.batch_size, seed=train.seed, device=train.device, patience=train.patience,
                   amp=train.amp, compile=train.compile, checkpointing=config.model.checkpointing,
                   accumulate=train.accumulate, **runtime)

    # -- one step -------------------------------------------------------------------------
    def _step_forward(self, compile: bool) -> Callable[[Any], dict[str, Tensor]]:
        """The forward pass of a training step, decided once from what the balancer declares it needs.

        Loss-level methods: the (compiled) model. Gradient methods keep the shared representation
        through ``balancer.outputs``: required in representation mode, the fast path in parameter
        mode. With ``compile``, parameter mode takes the compiled model instead (the balancer then
        derives per-task gradients from the parameters); representation mode cannot, and says so.
        """
        if not self.balancer.needs_task_gradients:
            return self.forward
        if getattr(self.balancer, "needs_representation", False):
            if compile:
                log.warning("%s: torch.compile is not applied: %s in representation mode needs the shared "
                            "representation of the uncompiled model", self.model_name, type(self.balancer).__name__)
            return lambda inputs: self.balancer.outputs(self.model, inputs)
        if compile:
            return self.forward
        return lambda inputs: self.balancer.outputs(self.model, inputs)

    def _steps(self, loader: Iterable[Batch]) -> Iterable[Batch | list[Batch]]:
        """The epoch's steps on the device: each batch, or lists of ``accumulate`` consecutive micro-batches
        (the last list holds what is left)."""
        group: list[Batch] = []
        for batch in loader:
            batch = batch.to(self.device, non_blocking=True)
            if self.accumulate == 1:
                yield batch
                continue
            group.append(batch)
            if len(group) == self.accumulate:
                yield group
                group = []
        if group:
            yield group

    def _autocast(self):
        if self.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def train_step(self, batch: Batch | Sequence[Batch]) -> dict[str, Tensor]:
        """Forward, masked losses, balancing, penalties, optimizer and proximal steps; returns the losses.

        Given a list of micro-batches, one step equal to the step on their concatenation (gradient
        accumulation, see :mod:`taskloom.train.accumulate`); the losses returned are the whole step's.
        """
        if not self.model.training:  # train() walks every submodule: only when evaluation switched it off
            self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        micro = None
        scale = self.scaler.scale if self.scaler.is_enabled() else None
        if isinstance(batch, Batch):
            with self._autocast():
                losses = self._losses(self.step_forward(batch.inputs), batch)
            if scale is not None:
                self.balancer.backward(losses, self.model, scale=scale)  # weights from the true losses
            else:
                self.balancer.backward(losses, self.model)
        else:
            if not batch:
                raise ValueError("train_step got an empty list of micro-batches; pass a Batch or a non-empty list")
            check_accumulation(max(2, len(batch)), self.balancer)  # a list of micro-batches accumulates
            micro = step_losses(batch, self.forward, self.tasks, self.device, self._autocast, self.communicator)
            accumulated_backward(micro, self.model, self.balancer, self.tasks, self.forward, self._autocast, scale)
            losses = step_values(micro)
        if self.communicator is not None:  # before the penalties, which every rank adds whole
            done = {id(p) for p in self.balancer.reduced_parameters(self.model)}
            self.communicator.reduce_gradients([p for p in self.model.parameters()
                                                if p.requires_grad and id(p) not in done])
        penalties = [p for p in [self.model.regularization(), *(r.penalty() for r in self.regularizers),
                                 None if self.curriculum is None else self.curriculum.penalty()] if p is not None]
        if penalties:
            penalty = sum(penalties)
            (self.scaler.scale(penalty) if self.scaler.is_enabled() else penalty).backward()
        stepped = True
        if self.scaler.is_enabled():
            scale = self.scaler.get_scale() if self.regularizers else 0.0  # a host sync, only when a prox follows
            self.scaler.step(self.optimizer)
            self.scaler.update()
            stepped = not self.regularizers or self.scaler.get_scale() >= scale  # it drops when inf/NaN skipped the step
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if stepped:  # a proximal step belongs to the optimizer step it follows
            lr = self.optimizer.param_groups[0]["lr"]
            for regularizer in self.regularizers:
                regularizer.proximal_step(lr)
        if self.balancer.needs_post_step_losses:
            if micro is None:
                with torch.no_grad(), self._autocast():
                    self.balancer.post_step(self._losses(self.forward(batch.inputs), batch))
            else:  # the whole step's losses after the update
                self.balancer.post_step(step_values(step_losses(micro.batches, self.forward, self.tasks,
                                                                self.device, self._autocast, self.communicator)))
        return losses

    def _losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """The masked task losses; under data parallelism those of the global batch (see ``distributed``)."""
        if self.communicator is None:
            return task_losses(outputs, batch, self.tasks)
        return global_task_losses(outputs, batch, self.tasks, self.communicator)

    def synchronize(self) -> None:
        """Under data parallelism, start every rank from rank 0's whole training state (fresh or resumed)."""
        if self.communicator is None:
            return
        state = self.communicator.broadcast_object(self.state_dict() if self.communicator.is_main else None)
        if not self.communicator.is_main:
            self._load_state(state, "rank 0's state", restore_training=True)
        self._synchronized = True

    # -- epochs ---------------------------------------------------------------------------
    def fit(self, train: MultiTaskDataset | Any, val: MultiTaskDataset | None = None) -> History:
        """Train for the configured epochs (from ``start_epoch`` when resumed); returns the history.

        ``train`` is a :class:`MultiTaskDataset` or any loader of :class:`Batch` objects with
        ``__len__`` and ``set_epoch``.
        """
        for split, data in (("train", train), ("validation", val)):
            if isinstance(data, MultiTaskDataset):  # bad labels or features are named before any step
                data.validate(list(self.tasks.values()), split)
        loader = BatchLoader(train, self.batch_size, seed=self.seed) if isinstance(train, MultiTaskDataset) else train
        if self.communicator is not None:
            if not self._synchronized:
                self.synchronize()
            loader = ShardedLoader(loader, self.communicator)
        steps = self._steps_per_epoch = math.ceil(len(loader) / self.accumulate)  # optimizer steps per epoch
        if getattr(self.balancer, "needs_validation", False):  # e.g. Auto-Lambda: learns on validation batches
            self.balancer.attach_validation(validation_losses(val, self.tasks, self.batch_size, self.seed,
                                                              self.device, self._autocast,
                                                              type(self.balancer).__name__,
                                                              getattr(self.balancer, "validation_draws", int)()))
        plan = getattr(self.balancer, "plan", None)  # e.g. auxiliary weight schedules (balancing.auxiliary_weighting)
        if callable(plan):
            plan(self.epochs * steps)
        if not self._schedule_built:
            self._schedule_built = True
            self.scheduler = build_schedule(self.optimizer, epochs=self.epochs, steps_per_epoch=steps,
                                            **self.schedule_spec)
            if self.scheduler is not None and self._pending_scheduler_state is not None:
                self.scheduler.load_state_dict(self._pending_scheduler_state)
                for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                    group["lr"] = lr
        for epoch in range(self.start_epoch, self.epochs + 1):
            started = time.perf_counter()
            self.analysis_seconds = 0.0
            loader.set_epoch(epoch)
            if self.curriculum is not None:
                self.curriculum.begin_epoch(self, epoch, loader)
            sums = {name: torch.zeros((), device=self.device) for name in self.tasks}
            counts = {name: 0 for name in self.tasks}
            previous = None  # the last step's losses, checked after the next step is queued: no sync of its own
            for step, batch in enumerate(self._steps(loader)):
                if self.curriculum is not None:
                    batch = self.curriculum.step_batch(batch, epoch)
                    if batch is None:  # a step that trains no task
                        continue
                first = batch if isinstance(batch, Batch) else batch[0]  # what monitors and diagnostics see
                if self.monitors:
                    monitor_started = self._monitor_clock()
                    for monitor in self.monitors:
                        monitor.before_step(self, first, step)
                    self.analysis_seconds += self._monitor_clock() - monitor_started
                try:
                    losses = self.train_step(batch)
                except Exception as error:  # e.g. a solver fed non-finite gradients
                    self._check_finite(previous, epoch, steps)
                    self._check_gradients(first, error, epoch, step + 1, steps)
                    raise
                self._check_finite(previous, epoch, steps)
                previous = (step + 1, list(losses), torch.stack([loss.detach().float() for loss in losses.values()])
                            if losses else None)
                if step == 0:
                    fault_point("step", epoch, self.model_name)
                for name, loss in losses.items():
                    sums[name] += loss.detach().float()
                    counts[name] += 1
                if self.on_step is not None:
                    self.on_step(step + 1, steps)
            self._check_finite(previous, epoch, steps)
            train_loss = {n: (sums[n] / counts[n]).item() for n in self.tasks if counts[n]}
            self.balancer.on_epoch_end(train_loss)
            model_hook = getattr(self.model, "on_epoch_end", None)  # e.g. the cascade's successive snapshot
            if callable(model_hook):
                model_hook(epoch)
            self._restructure(epoch, val)
            record = self._end_epoch(epoch, train_loss, val, time.perf_counter() - started - self.analysis_seconds)
            self.start_epoch = epoch + 1
            if self.run_dir is not None:
                fault_point("after_log", epoch, self.model_name)
                self.save(self.checkpoint_dir / "last.pt")
                fault_point("after_last", epoch, self.model_name)
            if self.on_epoch_end is not None:
                self.on_epoch_end(record)
            stop = self.patience is not None and self.history.epochs_without_improvement >= self.patience
            if self.communicator is not None:  # rank 0's decision (its selection may use baselines only it read)
                stop = self.communicator.broadcast_object(stop)
            if stop:
                log.info("%s: early stop after epoch %d (%d epochs without improvement)", self.model_name, epoch,
                         self.patience)
                self.start_epoch = self.epochs + 1
                if self.run_dir is not None:
                    self.save(self.checkpoint_dir / "last.pt")
                break
        if self.run_dir is not None and self.regularizers:  # their final state, e.g. the learned task covariance
            reports = [regularizer.report() for regularizer in self.regularizers]
            write_json_atomically(self.run_dir / "regularizers.json", reports)
        self._write_structure()
        for monitor in self.monitors:
            monitor.end_fit(self)
        return self.history

    def _restructure(self, epoch: int, val: MultiTaskDataset | None) -> None:
        """Let a model that grows (``restructure``, e.g. branching's splits) change its parameters, then
        rebuild the optimizer over them and write its structure file."""
        restructure = getattr(self.model, "restructure", None)
        if callable(restructure) and restructure(epoch, val, self.device, lr=self.optimizer.param_groups[0]["lr"]):
            self.rebuild_optimizer()
            self._write_structure()

    def _write_structure(self) -> None:
        name = getattr(self.model, "structure_file", None)
        if name and self.run_dir is not None:
            write_json_atomically(self.run_dir / name, self.model.structure())

    def rebuild_optimizer(self) -> None:
        """A new optimizer over the model's current parameters (after it added or dropped some), keeping the
        state and learning rates of the parameters that stayed, and the schedule's position."""
        old = self.optimizer
        kept = {id(p): old.state[p] for group in old.param_groups for p in group["params"] if p in old.state}
        self.optimizer = build_optimizer(self.model.parameters(), **self.optimizer_spec)
        balancer_parameters = [p for p in self.balancer.parameters() if p.requires_grad]
        if balancer_parameters:
            self.optimizer.add_param_group({"params": balancer_parameters, "weight_decay": 0.0})
        for group, previous in zip(self.optimizer.param_groups, old.param_groups):
            group["lr"] = previous["lr"]
            for p in group["params"]:
                if id(p) in kept:
                    self.optimizer.state[p] = kept[id(p)]
        if self.scheduler is not None:
            state = self.scheduler.state_dict()
            self.scheduler = build_schedule(self.optimizer, epochs=self.epochs, steps_per_epoch=self._steps_per_epoch,
                                            **self.schedule_spec)
            self.scheduler.load_state_dict(state)
            for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                group["lr"] = lr

    def _end_epoch(self, epoch: int, train_loss: dict[str, float], val: MultiTaskDataset | None,
                   seconds: float) -> dict[str, Any]:
        record: dict[str, Any] = {"model": self.model_name, "epoch": epoch, "train_loss": train_loss,
                                  "weights": self.balancer.last_weights(), "seconds": seconds,
                                  "lr": self.optimizer.param_groups[0]["lr"]}
        if self.curriculum is not None:
            record["curriculum"] = self.curriculum.record(epoch)
        if self.regularizers:
            record["regularizers"] = [regularizer.report() for regularizer in self.regularizers]
        auxiliary = getattr(self.balancer, "report", None)  # auxiliary tasks' scheduled weights and gates
        if callable(auxiliary):
            record["auxiliary"] = auxiliary()
        if val is not None:
            results = self.evaluate(val)
            record["val"] = {n: {k: v for k, v in r.items() if k not in ("loss", "labelled", "note")}
                             for n, r in results.items()}
            record["val_loss"] = {n: r["loss"] for n, r in results.items() if "loss" in r}
            joined = set(results) if self.curriculum is None else set(self.curriculum.joined(epoch))
            record["score"] = score = self.selection({n: r for n, r in results.items() if n in joined})
            complete = joined >= set(self.tasks)  # a curriculum's early epochs are neither best nor patience
            improved = complete and score > self.history.best_score
            if improved:
                self.history.best_score, self.history.best_epoch = score, epoch
                self.history.epochs_without_improvement = 0
            elif complete:
                self.history.epochs_without_improvement += 1
            task_improved = []
            for name, task in self.tasks.items():
                value = results[name].get(task.main_metric) if name in joined else None
                if value is None or not math.isfinite(value):  # a diverged metric is never a task's best
                    continue
                signed = value if task.higher_is_better else -value
                if signed > self.history.best_per_task.get(name, float("-inf")):
                    self.history.best_per_task[name] = signed
                    task_improved.append(name)
            if self.run_dir is not None:
                if improved:
                    self.save(self.checkpoint_dir / "best.pt")
                if self.save_task_best and len(self.tasks) > 1:
                    for name in task_improved:
                        self.save(self.checkpoint_dir / f"best-{name}.pt")
            record["selected_by"] = self.selection.describe()
            log.debug("%s epoch %d: score %.3f, %s", self.model_name, epoch, score,
                      {n: results[n].get(t.main_metric) for n, t in self.tasks.items()})
        if self.monitors:
            monitor_started = self._monitor_clock()
            for monitor in self.monitors:
                monitor.on_epoch_end(self, record)
            self.analysis_seconds += self._monitor_clock() - monitor_started
            record["analysis_seconds"] = self.analysis_seconds
        self.history.records.append(record)
        if self.run_dir is not None:
            with open(self.run_dir / "metrics.jsonl", "a") as file:
                file.write(to_json(record) + "\n")
        return record

    def _check_finite(self, step_losses: tuple[int, list[str], Tensor | None] | None, epoch: int,
                      steps: int) -> None:
        """Raise :class:`TrainingDiverged` when a task's loss of a step (``(step, task names, stacked losses)``)
        is NaN or infinite. Called one step late, so that reading it waits for work already done."""
        if step_losses is None or step_losses[2] is None:
            return
        step, names, values = step_losses
        if bool(torch.isfinite(values).all()):
            return
        for name, value in zip(names, values.tolist()):
            if not math.isfinite(value):
                raise TrainingDiverged(self.model_name, name, value, epoch, step, steps,
                                       self.optimizer.param_groups[0]["lr"])

    def _check_gradients(self, batch: Batch, error: Exception, epoch: int, step: int, steps: int) -> None:
        """After a failed step: raise :class:`TrainingDiverged` naming the first task whose loss or gradient on
        this batch is not finite (one backward per task, only on this failure path); else return."""
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        try:
            with self._autocast():
                losses = task_losses(self.forward(batch.inputs), batch, self.tasks)
            finite = {}
            for name, loss in losses.items():
                gradients = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
                finite[name] = math.isfinite(float(loss.detach())) and all(
                    g is None or bool(torch.isfinite(g).all()) for g in gradients)
        except Exception:  # the failure was not numeric (the forward itself fails): the caller re-raises it
            return
        for name, loss in losses.items():
            value = float(loss.detach())
            if finite[name]:
                continue
            reason = (f"its gradient is not finite, and {type(self.balancer).__name__} failed on it with "
                      f"{type(error).__name__}")
            raise TrainingDiverged(self.model_name, name, value, epoch, step, steps,
                                   self.optimizer.param_groups[0]["lr"], reason) from error

    def _monitor_clock(self) -> float:
        """perf_counter after the device's queued work, so monitor time is not billed to a training step."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def evaluate(self, data: MultiTaskDataset, batch_size: int | None = None) -> dict[str, dict[str, Any]]:
        """Per-task metrics over labelled rows (see :func:`taskloom.evaluate.evaluator.evaluate_model`)."""
        return evaluate_model(self.model, data, list(self.tasks.values()), batch_size or max(self.batch_size, 512),
                              self.device)

    def predict(self, inputs: Any) -> dict[str, Tensor]:
        """Every task's prediction from one forward pass."""
        from taskloom.data.batch import move

        return predict(self.model, move(inputs, self.device), list(self.tasks.values()))

    # -- checkpoints ----------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        if self.run_dir is None:
            raise ValueError("this trainer has no run_dir")
        return self.run_dir / "checkpoints"

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "balancer": self.balancer.state_dict(),
            "regularizers": [regularizer.state_dict() for regularizer in self.regularizers],
            "scaler": self.scaler.state_dict(),
            "selection_baselines": self.selection.state_dict(),
            "history": self.history.to_json(),
            "next_epoch": self.start_epoch,
            "rng": rng_state(),
            "task_names": list(self.tasks),
            "curriculum": {} if self.curriculum is None else self.curriculum.state_dict(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the whole training state atomically."""
        path = Path(path)
        point = {"last.pt": "write_last", "best.pt": "write_best"}.get(path.name)
        epoch = self.start_epoch if point == "write_best" else self.start_epoch - 1  # last.pt follows the epoch's end
        hook = None if point is None else (lambda: fault_point(point, epoch, self.model_name))
        return save_checkpoint(self.state_dict(), path, before_rename=hook)

    def load(self, path: str | Path, restore_training: bool = True) -> None:
        """Restore the model (and, with ``restore_training``, everything needed to continue)."""
        self._load_state(load_checkpoint(path, self.device), path, restore_training)

    def _load_state(self, state: dict[str, Any], path: Any, restore_training: bool) -> None:
        if set(state["task_names"]) != set(self.tasks):
            raise ValueError(f"checkpoint {path} is for tasks {state['task_names']}, not {list(self.tasks)}")
        if restore_training and state["task_names"] != list(self.tasks):  # optimizer and balancer state are positional
            raise ValueError(f"checkpoint {path} lists its tasks as {state['task_names']}; continuing its training "
                             f"needs that order, not {list(self.tasks)} (loading only the model accepts any order)")
        self.model.load_state_dict(state["model"])  # a model that grows rebuilds its saved structure here
        if not restore_training:
            return
        if {id(p) for p in self.model.parameters()} != {id(p) for p in self.optimizer.param_groups[0]["params"]}:
            self.rebuild_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.balancer.load_state_dict(state["balancer"])
        for regularizer, regularizer_state in zip(self.regularizers, state.get("regularizers", [])):
            regularizer.load_state_dict(regularizer_state)
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.selection.load_state_dict(state["selection_baselines"])
        if self.curriculum is not None and state.get("curriculum"):
            self.curriculum.load_state_dict(state["curriculum"])
        self.history = History.from_json(state["history"])
        self.start_epoch = state["next_epoch"]
        self._pending_scheduler_state = state["scheduler"]
        self.scheduler = None
        self._schedule_built = False
        set_rng_state(state["rng"])

    def resume(self) -> bool:
        """Continue from ``run_dir/checkpoints/last.pt`` if it exists; True when it did.

        Before anything is loaded, every checkpoint of this model (``last.pt``, ``best.pt``,
        ``best-<task>.pt``) is read (a bad one raises :class:`CheckpointError` naming it), the
        temporary files of interrupted writes are removed, and ``metrics.jsonl`` keeps only the
        records of the epochs the checkpoint covers (a fresh start keeps none).
        """
        if self.communicator is not None and not self.communicator.is_main:
            return False  # this rank takes rank 0's (resumed) state at the start of fit
        for checkpoint in sorted(self.checkpoint_dir.glob("*.pt")):
            load_checkpoint(checkpoint)  # on the CPU: only read, to fail before any work
        remove_orphan_temporaries(self.run_dir)
        path = self.checkpoint_dir / "last.pt"
        if path.is_file():
            self.load(path)
        self._truncate_log(self.start_epoch)
        if not path.is_file():
            return False
        log.info("%s: resuming at epoch %d", self.model_name, self.start_epoch)
        return True

    def _truncate_log(self, next_epoch: int) -> None:
        """Keep the metrics.jsonl records of epochs before ``next_epoch`` (one each); drop torn or later lines."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept: dict[int, str] = {}
        for line in path.read_text().splitlines():
            try:
                epoch = int(json.loads(line)["epoch"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line torn by a kill during the append
            if epoch < next_epoch:
                kept.setdefault(epoch, line)
        text = "".join(kept[epoch] + "\n" for epoch in sorted(kept))
        if text != path.read_text():
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_text(text)
            os.replace(temporary, path)

    @property
    def finished(self) -> bool:
        return self.start_epoch > self.epochs
