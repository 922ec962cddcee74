"""Adding a task to a trained model: freeze what exists, train only the new head or tower.

Existing parameters get ``requires_grad=False`` and existing batch-norm layers stop updating
their running statistics (momentum 0), so training the new task leaves the old tasks'
predictions unchanged.
"""
from __future__ import annotations

import logging
from typing import Any

from torch import nn

from taskloom.sharing.base import MultiTaskModule
from taskloom.sharing.hard import MultiTaskModel
from taskloom.sharing.layers import head_width
from taskloom.task import Task

log = logging.getLogger(__name__)


def freeze(model: nn.Module) -> None:
    """No gradient to any parameter of ``model``, no running-statistics update in its batch norms."""
    model.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0


def add_task(model: MultiTaskModule, task: Task, **options: Any) -> MultiTaskModule:
    """Freeze ``model`` and add ``task`` (in place; returns ``model``).

    Hard sharing, MMoE and DSelect-k get a new head (MMoE and DSelect-k also a gate), MTAN new attention masks
    and a head; low-level supervision a head at
    ``depth``; soft and hybrid sharing a new tower (``tower=``, default a copy of an existing
    trained tower) and head. Optimize ``[p for p in model.parameters() if p.requires_grad]``.
    """
    if task.name in model.task_names:
        raise ValueError(f"add_task: the model already has a task {task.name!r}")
    existing = list(model.parameters())
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if isinstance(model, MultiTaskModel):
        if options:
            raise TypeError(f"add_task: hard sharing takes no options, got {sorted(options)}")
        width = getattr(model.trunk, "out_features", None)
        width = int(width) if width is not None else head_width(next(iter(model.heads.values())))
        model.heads[task.name] = task.build_head(width)
        model.task_names.append(task.name)
    elif hasattr(model, "attach_task"):
        model.attach_task(task, **options)
    else:
        raise TypeError(
            f"add_task: {type(model).__name__} cannot take a new task; use hard, low_level, soft, hybrid, mmoe, "
            "mtan or dselect_k"
        )
    for p in existing:
        p.requires_grad_(False)
    for norm in norms:
        norm.momentum = 0.0
    log.info("added task %r; %d parameter tensors are trainable", task.name,
             sum(p.requires_grad for p in model.parameters()))
    return model


def remove_task(model: MultiTaskModule, name: str) -> MultiTaskModule:
    """Drop a task's head (hard sharing, low-level supervision), its gate and head (MMoE) or its tower and head
    (soft and hybrid sharing), in place; the other tasks' outputs are unchanged."""
    if hasattr(model, "detach_task"):
        model.detach_task(name)
        return model
    heads = getattr(model, "heads", None)
    if not isinstance(model, MultiTaskModel) or name not in heads:
        raise ValueError(f"remove_task: cannot remove {name!r} from {type(model).__name__}")
    del heads[name]
    model.task_names.remove(name)
    return model
