"""What every cross-task regularizer offers the trainer: a penalty, a proximal step, state and a report.

A regularizer acts on one group of parameters per task (by default the first weight matrix of
each task's head), stacked into a feature-by-task matrix ``W``.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

ParameterSelection = Union[
    None, str, Sequence[str], Callable[[nn.Module], Mapping[str, Union[Tensor, Sequence[Tensor]]]]
]


def _working(W: Tensor) -> Tensor:
    """``W`` in a dtype that linear algebra supports (half precision is lifted to float32)."""
    return W.float() if W.dtype in (torch.float16, torch.bfloat16) else W


def _escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _task_pattern(pattern: str, task: str) -> str:
    if "{task}" in pattern:
        return pattern.replace("{task}", _escape(task))
    if "*" in pattern:
        return pattern.replace("*", _escape(task), 1)
    raise ValueError(
        f"parameter pattern {pattern!r} names no task: write '{{task}}' or '*' where the task name goes, "
        "for example 'heads.{task}.weight'"
    )


def select_task_parameters(
    model: nn.Module, parameters: ParameterSelection = None, tasks: Sequence[str] | None = None
) -> dict[str, list[Tensor]]:
    """The tensors a regularizer acts on, per task, in a fixed order.

    ``parameters`` is None (each task's first weight matrix among ``model.task_parameters(task)``),
    a pattern or list of patterns over ``model.named_parameters()`` in which ``{task}`` (or the first
    ``*``) stands for the task name (``"heads.{task}.weight"``, ``"heads.*.0.weight"``), or a
    callable ``model -> {task: tensor or list of tensors}``.
    """
    if callable(parameters):
        chosen = parameters(model)
        groups = {name: [value] if isinstance(value, Tensor) else list(value) for name, value in chosen.items()}
        if tasks is not None:
            groups = {name: groups[name] for name in tasks}
    else:
        names = list(tasks) if tasks is not None else list(getattr(model, "task_names", []))
        if not names:
            raise ValueError("the model has no task_names; pass tasks=[...] or a callable parameters=")
        groups = {}
        if parameters is None:
            for name in names:
                weights = [p for p in model.task_parameters(name) if p.ndim >= 2]
                if not weights:
                    raise ValueError(f"task {name!r} has no weight matrix among its task parameters; "
                                     "name the parameters with parameters='heads.{task}.weight'")
                groups[name] = [weights[0]]
        else:
            patterns = [parameters] if isinstance(parameters, str) else list(parameters)
            named = list(model.named_parameters())
            for name in names:
                task_patterns = [_task_pattern(p, name) for p in patterns]
                matched = [p for n, p in named if any(fnmatch.fnmatchcase(n, tp) for tp in task_patterns)]
                if not matched:
                    known = ", ".join(n for n, _ in named[:20])
                    raise ValueError(f"parameters {patterns!r} match no parameter of task {name!r}; "
                                     f"the model's parameters include: {known}")
                groups[name] = matched
    if len(groups) < 2:
        raise ValueError(f"a cross-task regularizer needs at least two tasks; got {list(groups)}")
    owner: dict[int, str] = {}
    for name, tensors in groups.items():
        for tensor in tensors:
            if id(tensor) in owner:
                raise ValueError(f"a parameter is selected for both task {owner[id(tensor)]!r} and task {name!r}; "
                                 "each task needs its own parameters")
            owner[id(tensor)] = name
    return groups


class Regularizer:
    """A penalty over the parameters of several tasks, built as ``Cls(model, parameters=, strength=, **options)``.

    The trainer adds ``penalty()`` (when not None) to the objective before backward, and calls
    ``proximal_step(lr)`` right after ``optimizer.step()``; ``strength`` scales the penalty.
    With plain SGD that is exact proximal gradient descent; with adaptive optimizers (Adam) the
    prox at the base learning rate is the usual heuristic. Stateful ones also save ``state_dict()``.

    Scaling of ``strength`` (s) against scikit-learn's ``alpha`` and MALSAR's ``rho``, for T regression
    tasks with one output each on the same n rows, every row labelled:

    - in the :class:`~taskloom.train.trainer.Trainer` (equal weighting) the objective is
      ``sum_t (1/n) ||y_t - f_t||^2 + s P(W)``: plain MSE, no 1/2. Halved, that is
      ``(1/(2n)) ||Y - F||_F^2 + (s/2) P(W)``, so **alpha = s / 2** and **rho = n s / 2**;
    - under the loss ``(1/(2n)) ||Y - F||_F^2`` (:class:`taskloom.linear.MultiTaskLinear`, or a loop
      of your own with half the MSE) **alpha = s** and **rho = n s**.

    MALSAR's loss is ``sum_t (1/2) ||y_t - X w_t||^2``, hence ``rho = n alpha``. A task with n_t
    labelled rows puts n_t for n in its loss; a regression task with k outputs averages its squared
    errors over them too, so there alpha = k s / 2. Other balancing methods reweight the losses.
    """

    smooth: bool = True

    def __init__(self, model: nn.Module, parameters: ParameterSelection = None, strength: float = 1e-3,
                 tasks: Sequence[str] | None = None) -> None:
        if not strength >= 0:
            raise ValueError(f"strength must be a number >= 0; got {strength!r}")
        self.strength = float(strength)
        self.groups = select_task_parameters(model, parameters, tasks)
        self.task_names = list(self.groups)

    # -- the matrices -----------------------------------------------------------------------
    def task_matrix(self) -> Tensor:
        """``W`` with one column per task: each task's selected tensors flattened and concatenated."""
        columns = [torch.cat([t.reshape(-1) for t in tensors]) for tensors in self.groups.values()]
        sizes = {name: int(c.numel()) for name, c in zip(self.task_names, columns)}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"{type(self).__name__} needs the same number of parameters per task; got {sizes}")
        return torch.stack(columns, dim=1)

    @torch.no_grad()
    def assign_task_matrix(self, W: Tensor) -> None:
        """Write the columns of ``W`` back into each task's tensors."""
        for column, tensors in zip(W.unbind(dim=1), self.groups.values()):
            offset = 0
            for tensor in tensors:
                tensor.copy_(column[offset:offset + tensor.numel()].view_as(tensor))
                offset += tensor.numel()

    def feature_matrix(self) -> Tensor:
        """``W`` with one row per input feature: each weight ``(out, in, ...)`` is read as ``(in..., out)``."""
        blocks = []
        for name, tensors in self.groups.items():
            for tensor in tensors:
                if tensor.ndim < 2:
                    raise ValueError(f"{type(self).__name__} acts on weight matrices; task {name!r} selects a "
                                     f"tensor of shape {tuple(tensor.shape)} (a bias?); select weights only")
                blocks.append(tensor.flatten(1).T)
        rows = {block.shape[0] for block in blocks}
        if len(rows) > 1:
            raise ValueError(f"{type(self).__name__} needs the same input features in every task; got {sorted(rows)}")
        return torch.cat(blocks, dim=1)

    @torch.no_grad()
    def scale_features(self, scale: Tensor) -> None:
        """Multiply every selected weight's input feature ``j`` by ``scale[j]`` in place."""
        for tensors in self.groups.values():
            for tensor in tensors:
                flat = tensor.view(tensor.shape[0], -1) if tensor.is_contiguous() else None
                if flat is not None:
                    flat.mul_(scale.to(tensor.dtype))
                else:
                    tensor.copy_((tensor.flatten(1) * scale.to(tensor.dtype)).view_as(tensor))

    # -- the trainer's interface ----------------------------------------------------------------
    def penalty(self) -> Tensor | None:
        """The differentiable term to add to the objective, or None for a penalty applied by its prox."""
        return None

    def proximal_step(self, lr: float) -> None:
        """Called right after ``optimizer.step()`` with the current learning rate; no-op by default."""

    def value(self) -> float:
        """The current penalty value (including ``strength``), for logs and reports."""
        with torch.no_grad():
            return float(self._value())

    def _value(self) -> Tensor:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """What a run directory records about this regularizer."""
        return {"name": type(self).__name__, "tasks": self.task_names, "strength": self.strength,
                "penalty": self.value()}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state; got keys {sorted(state)}")
