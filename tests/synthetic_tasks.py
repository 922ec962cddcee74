"""Small generated multi-task data for tests, deterministic."""
from __future__ import annotations

import torch

from taskloom import MultiTaskDataset, Task


def make_three_task_data(n: int = 400, seed: int = 0, missing: float = 0.0) -> tuple[MultiTaskDataset, list[Task]]:
    """Binary, multiclass and regression tasks that share the first input features."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    targets = {
        "sign": (x[:, 0] > 0).float(),
        "quadrant": ((x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long()),
        "level": 2 * x[:, 0] - x[:, 1] + 0.1 * torch.randn(n, generator=generator),
    }
    masks = {}
    if missing:
        masks["sign"] = torch.rand(n, generator=generator) >= missing
    tasks = [Task("sign", "binary"), Task("quadrant", "multiclass", 4), Task("level", "regression")]
    return MultiTaskDataset(x, targets, masks), tasks
