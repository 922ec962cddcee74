"""Task curricula: which tasks train at each epoch and step (Pentina, Sharmanska & Lampert 2015, CVPR).

A task left out of a step is masked out of its batch (all its rows unlabelled), so it adds no
loss and no gradient and every balancing method handles it as it handles a missing label.
``OrderCurriculum`` lets tasks join one after another; ``SamplingCurriculum`` includes each task
in a step with a scheduled probability. The sequential mode of the paper is in
:mod:`taskloom.train.sequential`. The trainer calls a curriculum's ``begin_epoch`` before an
epoch, ``step_batch`` before each step, ``penalty`` in each step, and ``record`` and ``joined``
when the epoch is evaluated (a task is left out of checkpoint selection until it has joined).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from taskloom.data.batch import Batch

log = logging.getLogger(__name__)


def mask_tasks(batch: Batch | list[Batch], excluded: Sequence[str]) -> Batch | list[Batch]:
    """``batch`` (or each micro-batch of a list) with every row of the ``excluded`` tasks unlabelled."""
    if isinstance(batch, list):
        return [mask_tasks(micro, excluded) for micro in batch]  # type: ignore[misc]
    if not excluded:
        return batch
    masks = dict(batch.masks)
    for name in excluded:
        masks[name] = torch.zeros_like(batch.mask(name))
    return Batch(batch.inputs, batch.targets, masks, batch.weights)


class Curriculum:
    """What the trainer asks of a curriculum; this base trains every task at every step."""

    def __init__(self, task_names: Sequence[str]) -> None:
        self.task_names = list(task_names)

    def total_epochs(self, epochs: int) -> int:
        """How many epochs training takes, given ``train.epochs``."""
        return epochs

    def begin_epoch(self, trainer: Any, epoch: int, loader: Any) -> None:
        """Called before epoch ``epoch`` (1-based) with the trainer and the epoch's training loader."""

    def step_batch(self, batch: Batch | list[Batch], epoch: int) -> Batch | list[Batch] | None:
        """The step's batch with left-out tasks masked; None skips a step that trains no task."""
        return batch

    def penalty(self) -> Tensor | None:
        """A term added to the step's objective (the sequential mode's pull toward the previous solution)."""
        return None

    def joined(self, epoch: int) -> list[str]:
        """Tasks that have trained at or before ``epoch``: only they count for checkpoint selection."""
        return list(self.task_names)

    def record(self, epoch: int) -> dict[str, Any]:
        """What the epoch's metrics record keeps under ``curriculum``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a ``state_dict`` (curricula that depend only on the epoch keep nothing)."""


class OrderCurriculum(Curriculum):
    """Tasks join training in ``order``, one more every ``every`` epochs (Pentina et al. 2015, curriculum
    of tasks): the k-th listed task (from 0) joins at epoch ``1 + k * every``; tasks not listed train
    from epoch 1."""

    def __init__(self, task_names: Sequence[str], order: Sequence[str], every: int = 1) -> None:
        super().__init__(task_names)
        unknown = [name for name in order if name not in self.task_names]
        if unknown:
            raise ValueError(f"curriculum.order names unknown tasks {unknown}; tasks are {self.task_names}")
        if every < 1:
            raise ValueError(f"curriculum.every must be a positive number of epochs, got {every}")
        self.join_epoch = {name: 1 for name in self.task_names}
        for k, name in enumerate(order):
            self.join_epoch[name] = 1 + k * every

    def active(self, epoch: int) -> list[str]:
        return [name for name in self.task_names if self.join_epoch[name] <= epoch]

    def begin_epoch(self, trainer: Any, epoch: int, loader: Any) -> None:
        for name in self.task_names:
            if self.join_epoch[name] == epoch:
                log.info("task %s joins at epoch %d", name, epoch)

    def step_batch(self, batch: Batch | list[Batch], epoch: int) -> Batch | list[Batch] | None:
        active = set(self.active(epoch))
        return mask_tasks(batch, [name for name in self.task_names if name not in active])

    def joined(self, epoch: int) -> list[str]:
        return self.active(epoch)

    def record(self, epoch: int) -> dict[str, Any]:
        return {"mode": "order", "active": self.active(epoch),
                "joins": [name for name in self.task_names if self.join_epoch[name] == epoch],
                "join_epoch": dict(self.join_epoch)}


class SamplingCurriculum(Curriculum):
    """Each step includes each task independently with its probability at that epoch.

    ``schedule`` maps a task to ``(start, end)``: its probability at epoch e of E is
    ``start + (end - start) * (e - 1) / (E - 1)`` (``start`` when E = 1); tasks not named have
    probability 1. The draws of epoch e come from a generator seeded by ``seed`` and e only, so
    a run, and a run resumed at an epoch, repeats them. A step that includes no task is skipped
    (no update; the learning-rate schedule counts it as a step).
    """

    def __init__(self, task_names: Sequence[str], schedule: Mapping[str, Sequence[float]], epochs: int,
                 seed: int = 0) -> None:
        super().__init__(task_names)
        for name, ends in schedule.items():
            if name not in self.task_names:
                raise ValueError(f"curriculum: {name!r} is not a task; tasks are {self.task_names}")
            if len(ends) != 2 or not all(0 <= p <= 1 for p in ends):
                raise ValueError(f"curriculum: task {name!r} needs [start, end] probabilities in [0, 1], got {ends}")
        self.schedule = {name: (float(s), float(e)) for name, (s, e) in schedule.items()}
        self.epochs = epochs
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._probabilities = torch.ones(len(self.task_names), dtype=torch.float64)
        self._counts: dict[str, int] = {}
        self._steps = self._skipped = 0

    def probabilities(self, epoch: int) -> dict[str, float]:
        """Each task's inclusion probability at ``epoch`` (1-based), linear from start to end over the epochs."""
        progress = (epoch - 1) / (self.epochs - 1) if self.epochs > 1 else 0.0
        progress = min(1.0, max(0.0, progress))
        out = {}
        for name in self.task_names:
            start, end = self.schedule.get(name, (1.0, 1.0))
            out[name] = start + (end - start) * progress
        return out

    def begin_epoch(self, trainer: Any, epoch: int, loader: Any) -> None:
        self._generator = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + epoch)
        self._probabilities = torch.tensor([self.probabilities(epoch)[n] for n in self.task_names],
                                           dtype=torch.float64)
        self._counts = {name: 0 for name in self.task_names}
        self._steps = self._skipped = 0
        log.debug("curriculum epoch %d: task probabilities %s", epoch, self.probabilities(epoch))

    def draw(self) -> list[str]:
        """The tasks of the next step (``begin_epoch`` first)."""
        if self._generator is None:
            raise RuntimeError("SamplingCurriculum.draw before begin_epoch: call begin_epoch(trainer, epoch, loader)")
        uniform = torch.rand(len(self.task_names), generator=self._generator, dtype=torch.float64)
        included = [name for name, u, p in zip(self.task_names, uniform.tolist(), self._probabilities.tolist())
                    if u < p]
        self._steps += 1
        for name in included:
            self._counts[name] += 1
        return included

    def step_batch(self, batch: Batch | list[Batch], epoch: int) -> Batch | list[Batch] | None:
        included = set(self.draw())
        if not included:
            self._skipped += 1
            return None
        return mask_tasks(batch, [name for name in self.task_names if name not in included])

    def joined(self, epoch: int) -> list[str]:
        return [name for name in self.task_names
                if any(self.probabilities(e)[name] > 0 for e in range(1, epoch + 1))]

    def record(self, epoch: int) -> dict[str, Any]:
        return {"mode": "sampling", "probabilities": self.probabilities(epoch), "included": dict(self._counts),
                "steps": self._steps, "skipped": self._skipped}


def check_curriculum(config: Any, task_names: Sequence[str], epochs: int) -> None:
    """Refuse a ``curriculum`` naming a task not in ``task_names`` (the data set's own tasks when the config
    lists none) with :class:`~taskloom.config.ConfigError` naming the field, before any training."""
    from taskloom.config import ConfigError, FieldError

    section = getattr(config, "curriculum", None)
    if section is None:
        return
    try:
        section.check_tasks(list(task_names), epochs)
    except FieldError as error:
        raise ConfigError(f"curriculum.{error.path}: {error}") from None


def _restricted(section: Any, names: Sequence[str]) -> Any:
    """The section with only the tasks in ``names`` (a grid cell training a group of the tasks)."""
    update: dict[str, Any] = {}
    if isinstance(section.order, list):
        update["order"] = [name for name in section.order if name in names]
    for key in ("probabilities", "schedule"):
        given = getattr(section, key)
        if given is not None:
            update[key] = {name: value for name, value in given.items() if name in names}
    return section.model_copy(update=update)


def build_curriculum(config: Any, task_names: Sequence[str], epochs: int, seed: int = 0,
                     model: Any = None, all_tasks: Sequence[str] | None = None) -> Curriculum | None:
    """The curriculum a config's ``curriculum`` section describes for a model of ``task_names`` (None without one).

    Names are checked against ``all_tasks`` (default ``task_names``; see :func:`check_curriculum`); the
    tasks of ``all_tasks`` this model lacks (a group of a grid) are left out of the curriculum.
    """
    section = getattr(config, "curriculum", None)
    if section is None:
        return None
    check_curriculum(config, list(all_tasks or task_names), epochs)
    section = _restricted(section, task_names)
    if section.mode == "order":
        return OrderCurriculum(task_names, section.order, section.every)
    if section.mode == "sampling":
        if section.probabilities is not None:
            schedule = {name: (p, p) for name, p in section.probabilities.items()}
        else:
            schedule = {name: tuple(ends) for name, ends in section.schedule.items()}
        return SamplingCurriculum(task_names, schedule, epochs, seed)
    from taskloom.train.sequential import SequentialCurriculum

    if model is None:
        raise ValueError("curriculum mode sequential needs the model (build_curriculum(..., model=model))")
    return SequentialCurriculum(model, task_names, section.order, strength=section.strength,
                                epochs_per_task=section.epochs_per_task or epochs,
                                auto_steps=section.auto_steps or 20)
