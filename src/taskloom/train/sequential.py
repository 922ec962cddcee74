"""Sequential multi-task learning, SeqMT (Pentina, Sharmanska & Lampert 2015, "Curriculum learning of
multiple tasks", CVPR).

Tasks are learned one after another. The model of task t (the shared parameters plus t's own
parameters, its head) starts from the previous task's solution and minimizes

    L_t(w) + lambda / 2 * ||w - w_prev||^2

the adaptive-SVM objective of the paper with the task's loss in place of the hinge loss.
``w_prev`` is the shared parameters at the end of the previous stage and, for t's head, the
previous task's head when it has the same shapes (it is copied in, so t starts there) or t's
own head as initialized otherwise; the first task is pulled toward the initialization.

As in the paper, each task keeps its own solution ``w_t``: given a
:class:`~taskloom.sharing.per_task.PerTaskModels` (one copy of the model per task, what
``curriculum.keep: per_task`` builds), stage t trains copy t only, starting from copy t-1, and task t
is answered by copy t ever after. Given a plain model (``keep: shared``), every stage moves the one
set of shared parameters, so earlier tasks' heads end on shared parameters they were not trained with.
Heads of tasks not yet trained stay as initialized.

``order: auto`` is the paper's greedy ordering. Its PAC-Bayesian bound on the average expected
error of a task order (Gaussian posteriors at each ``w_t``, priors at ``w_{t-1}``) is of the form

    (1/n) sum_t [ er_t(w_t) + ||w_t - w_{t-1}||^2 / (2 c) ] + terms that do not depend on the order

(``er_t`` the empirical error of task t, ``c`` a constant of the sample sizes), and SeqMT picks
at each stage the remaining task whose adapted solution from ``w_prev`` has the smallest bracket.
The practical version here (the constant replaced by this objective's ``lambda``): each candidate
is fitted from ``w_prev`` for ``auto_steps`` optimizer steps of the objective above (on a copy of
the model, with the trainer's optimizer settings), then scored by its mean training loss over
those batches plus ``lambda / 2 * ||w - w_prev||^2``: the objective's value at the fitted
point. The smallest score wins (ties: the order of the tasks).
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from taskloom.data.batch import Batch
from taskloom.losses import task_losses
from taskloom.sharing.per_task import PerTaskModels
from taskloom.train.curriculum import Curriculum, mask_tasks

log = logging.getLogger(__name__)


def task_model_parameters(model: nn.Module, task: str) -> list[nn.Parameter]:
    """The parameters of task ``task``'s model: the shared ones, then the task's own, each once."""
    out, seen = [], set()
    for parameter in [*model.shared_parameters(), *model.task_parameters(task)]:
        if parameter.requires_grad and id(parameter) not in seen:
            seen.add(id(parameter))
            out.append(parameter)
    return out


def distance_penalty(parameters: Sequence[Tensor], anchors: Sequence[Tensor], strength: float) -> Tensor:
    """``strength / 2 * sum ||p - anchor||^2`` over the parameters (the pull toward the previous solution)."""
    total = sum(((p - a) ** 2).sum() for p, a in zip(parameters, anchors))
    return 0.5 * strength * total


def start_from(model: nn.Module, task: str, previous: str | None) -> bool:
    """Copy ``previous``'s own parameters into ``task``'s when their shapes all match; True when copied."""
    if previous is None:
        return False
    source, target = model.task_parameters(previous), model.task_parameters(task)
    if len(source) != len(target) or any(s.shape != t.shape for s, t in zip(source, target)):
        return False
    with torch.no_grad():
        for s, t in zip(source, target):
            t.copy_(s)
    return True


def begin_stage(model: nn.Module, task: str, previous: str | None) -> bool:
    """Make ``model`` ready for ``task``'s stage after ``previous``'s; True when t's head was copied from it."""
    if isinstance(model, PerTaskModels):
        model.activate(task)
        return previous is not None and model.transfer(previous, task)
    return start_from(model, task, previous)


class SequentialCurriculum(Curriculum):
    """Trains one task per stage of ``epochs_per_task`` epochs, pulled toward the previous stage's solution.

    ``order`` is a list of task names (tasks not listed are never trained: list them all) or ``"auto"``
    (the greedy choice above). Each stage starts with a fresh optimizer state.
    """

    def __init__(self, model: nn.Module, task_names: Sequence[str], order: Sequence[str] | str,
                 strength: float = 1.0, epochs_per_task: int = 1, auto_steps: int = 20) -> None:
        super().__init__(task_names)
        if order != "auto":
            order = list(order)
            if sorted(order) != sorted(self.task_names):
                raise ValueError(f"curriculum.order of mode sequential must list every task once: "
                                 f"{self.task_names}; got {order}")
        if strength < 0:
            raise ValueError(f"curriculum.strength must be >= 0, got {strength}")
        self.model = model
        self.auto = order == "auto"
        self.order: list[str] = [] if self.auto else list(order)
        self.strength = float(strength)
        self.epochs_per_task = int(epochs_per_task)
        self.auto_steps = int(auto_steps)
        self.anchors: list[Tensor] = []
        self.stage = -1
        self.criteria: list[dict[str, float]] = []  # order auto: each stage's candidate scores

    def total_epochs(self, epochs: int) -> int:
        return self.epochs_per_task * len(self.task_names)

    def stage_of(self, epoch: int) -> int:
        return (epoch - 1) // self.epochs_per_task

    @property
    def current(self) -> str:
        return self.order[self.stage]

    def parameters(self) -> list[nn.Parameter]:
        return task_model_parameters(self.model, self.current)

    def begin_epoch(self, trainer: Any, epoch: int, loader: Any) -> None:
        stage = self.stage_of(epoch)
        if stage == self.stage:  # within a stage (a resumed one included: its anchors were loaded)
            return
        previous = self.order[stage - 1] if stage > 0 else None
        if len(self.order) <= stage:  # order auto: choose this stage's task
            self.order.append(self.choose(trainer, loader, previous))
        self.stage = stage
        copied = begin_stage(self.model, self.current, previous)
        self.anchors = [p.detach().clone() for p in self.parameters()]
        trainer.optimizer.state.clear()
        log.info("sequential: stage %d/%d trains task %s from epoch %d%s", stage + 1, len(self.task_names),
                 self.current, epoch, f" (head copied from {previous})" if copied else "")

    def choose(self, trainer: Any, loader: Any, previous: str | None) -> str:
        """The remaining task with the smallest greedy criterion (see the module docstring)."""
        remaining = [name for name in self.task_names if name not in self.order]
        if len(remaining) == 1:
            return remaining[0]
        scores = {name: self.criterion(trainer, loader, name, previous) for name in remaining}
        if getattr(trainer, "communicator", None) is not None:  # every rank takes rank 0's choice
            scores = trainer.communicator.broadcast_object(scores)
        self.criteria.append(scores)
        chosen = min(remaining, key=lambda name: scores[name])
        log.info("sequential: order auto picks %s (criterion %s)", chosen,
                 ", ".join(f"{n} {v:.4g}" for n, v in scores.items()))
        return chosen

    def criterion(self, trainer: Any, loader: Any, task: str, previous: str | None) -> float:
        """Mean training loss of ``task`` after ``auto_steps`` steps from ``w_prev`` plus the distance term."""
        from taskloom.train.trainer import build_optimizer

        model = copy.deepcopy(self.model)
        begin_stage(model, task, previous)
        parameters = task_model_parameters(model, task)
        anchors = [p.detach().clone() for p in parameters]
        optimizer = build_optimizer(parameters, **trainer.optimizer_spec)
        others = [name for name in self.task_names if name != task]
        batches: list[Batch] = []
        while len(batches) < self.auto_steps:
            before = len(batches)
            for batch in loader:
                batches.append(batch.to(trainer.device))
                if len(batches) == self.auto_steps:
                    break
            if len(batches) == before:
                raise ValueError("curriculum order auto: the training loader yields no batch")
        tasks = trainer.tasks
        model.train()
        for batch in batches:
            batch = mask_tasks(batch, others)
            losses = task_losses(model(batch.inputs), batch, tasks)
            if task not in losses:
                continue
            optimizer.zero_grad(set_to_none=True)
            (losses[task] + distance_penalty(parameters, anchors, self.strength)).backward()
            optimizer.step()
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in batches:
                losses = task_losses(model(batch.inputs), mask_tasks(batch, others), tasks)
                if task in losses:
                    total, count = total + float(losses[task]), count + 1
            distance = float(distance_penalty(parameters, anchors, self.strength))
        if count == 0:
            return float("inf")  # no label of this task in the batches seen: chosen last
        return total / count + distance

    def step_batch(self, batch: Batch | list[Batch], epoch: int) -> Batch | list[Batch] | None:
        return mask_tasks(batch, [name for name in self.task_names if name != self.current])

    def penalty(self) -> Tensor | None:
        if not self.anchors or self.strength == 0:
            return None
        return distance_penalty(self.parameters(), self.anchors, self.strength)

    def joined(self, epoch: int) -> list[str]:
        return self.order[: self.stage_of(epoch) + 1]

    def record(self, epoch: int) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": "sequential", "stage": self.stage, "task": self.current,
                               "order": list(self.order)}
        if self.criteria:
            out["criteria"] = [dict(c) for c in self.criteria]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"order": list(self.order), "stage": self.stage, "anchors": [a.cpu() for a in self.anchors],
                "criteria": [dict(c) for c in self.criteria]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.order = list(state["order"])
        self.stage = int(state["stage"])
        device = next(self.model.parameters()).device
        self.anchors = [a.to(device) for a in state["anchors"]]
        self.criteria = [dict(c) for c in state["criteria"]]
        if isinstance(self.model, PerTaskModels) and 0 <= self.stage < len(self.order):
            self.model.activate(self.current)
