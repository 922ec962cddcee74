"""Small generated tasks, batches and trunks shared by the sharing tests."""
from __future__ import annotations

import torch
from torch import nn

from taskloom.data.batch import Batch
from taskloom.losses import task_losses
from taskloom.task import Task
from taskloom.trunks import MLP

IN_FEATURES = 8


def tasks() -> list[Task]:
    return [Task("sign", "binary"), Task("quadrant", "multiclass", 4), Task("level", "regression")]


def mlp() -> MLP:
    return MLP(IN_FEATURES, hidden=(16, 12))


def batch(n: int = 64, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN_FEATURES, generator=g)
    targets = {
        "sign": (x[:, 0] > 0).float(),
        "quadrant": (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long(),
        "level": 2 * x[:, 0] - x[:, 1],
    }
    return Batch(inputs=x, targets=targets, masks={}, weights={})


def losses(model: nn.Module, b: Batch, task_list: list[Task] | None = None) -> dict[str, torch.Tensor]:
    task_list = task_list if task_list is not None else tasks()
    return task_losses(model(b.inputs), b, {t.name: t for t in task_list if t.name in model.task_names})


def total_loss(model, b: Batch, task_list: list[Task] | None = None) -> torch.Tensor:
    loss = sum(losses(model, b, task_list).values())
    penalty = model.regularization()
    return loss if penalty is None else loss + penalty
