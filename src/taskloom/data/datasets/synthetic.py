"""Regression tasks with a chosen correlation, after Ma et al. 2018 (MMoE), section 3.

The task weight vectors share a direction with cosine ``correlation``; shared sinusoids
make the tasks non-linear, so label correlation rises with the knob but is not equal to it.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from taskloom.data.dataset import DataSplits, MultiTaskDataset
from taskloom.data.datasets import DATASETS
from taskloom.data.stratify import split_for_tasks
from taskloom.data.table import resolve_tasks
from taskloom.task import Task


def task_groups(num_tasks: int, groups: int) -> list[int]:
    """The group of each task: ``groups`` contiguous blocks of tasks, as equal as they can be."""
    if not 1 <= groups <= num_tasks:
        raise ValueError(f"groups must be between 1 and num_tasks ({num_tasks}), got {groups}")
    return [k * groups // num_tasks for k in range(num_tasks)]


def task_weights(d: int, num_tasks: int, correlation: float, c: float, rng: np.random.Generator,
                 groups: int = 1) -> np.ndarray:
    """``num_tasks`` x ``d`` weights: w_1 = c u_1, w_k = c (p u_1 + sqrt(1 - p^2) u_k), u orthonormal.

    With ``groups`` > 1 each group of tasks (:func:`task_groups`) has its own shared direction, the u of
    its first task: tasks of one group have cosine ``correlation``, tasks of different groups are orthogonal.
    """
    if not -1 <= correlation <= 1:
        raise ValueError(f"correlation must be in [-1, 1], got {correlation}")
    if num_tasks > d:
        raise ValueError(f"num_tasks ({num_tasks}) cannot exceed d ({d}): the u_k must be orthogonal")
    membership = task_groups(num_tasks, groups)
    basis, _ = np.linalg.qr(rng.standard_normal((d, num_tasks)))
    u = basis.T
    w = np.empty((num_tasks, d))
    for k in range(num_tasks):
        first = membership.index(membership[k])
        w[k] = c * u[k] if k == first else c * (correlation * u[first] + math.sqrt(1 - correlation**2) * u[k])
    return w


@DATASETS.register("synthetic", "regression tasks with a task-correlation knob (Ma et al. 2018, MMoE)")
def load_synthetic(
    tasks: Sequence[Task] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    n: int = 10_000,
    d: int = 100,
    num_tasks: int = 2,
    correlation: float = 0.5,
    c: float = 1.0,
    m: int = 10,
    noise_std: float = 0.1,
    stratify: bool = True,
    groups: int = 1,
) -> DataSplits:
    """x ~ N(0, I_d); y_k = w_k.x + sum_i sin(alpha_i w_k.x + beta_i) + eps, tasks ``y1`` .. ``yK``.

    alpha_i, beta_i ~ N(0, 1) are shared by the tasks; eps ~ N(0, 0.01), i.e. ``noise_std`` 0.1.
    Splits are stratified on the targets' quantile bins unless ``stratify`` is False.

    Options:
        n: rows generated
        d: input features, x ~ N(0, I_d)
        num_tasks: regression tasks y1 .. yK (at most d)
        correlation: cosine between the task weight vectors' shared direction, in [-1, 1]
        c: scale of the task weight vectors
        m: sinusoids added to each task
        noise_std: standard deviation of the label noise
        stratify: stratify the split on the targets' quantile bins; False: random rows
        groups: groups of related tasks (contiguous y's); tasks of different groups are unrelated
    """
    if n < 1 or d < 1 or num_tasks < 1 or m < 0:
        raise ValueError(f"synthetic: need n, d, num_tasks >= 1 and m >= 0; got n={n}, d={d}, "
                         f"num_tasks={num_tasks}, m={m}")
    rng = np.random.default_rng(seed)
    w = task_weights(d, num_tasks, correlation, c, rng, groups)
    alpha, beta = rng.standard_normal(m), rng.standard_normal(m)
    x = rng.standard_normal((n, d))
    linear = x @ w.T
    y = linear + np.sin(linear[:, :, None] * alpha + beta).sum(-1) + noise_std * rng.standard_normal((n, num_tasks))
    names = [f"y{k + 1}" for k in range(num_tasks)]
    chosen = resolve_tasks(tasks, lambda: [Task(name, "regression") for name in names], weight_columns=False)
    targets = {}
    for task in chosen:
        if task.target not in names:
            raise ValueError(f"task {task.name!r}: target {task.target!r} is not one of {names}")
        targets[task.name] = torch.from_numpy(y[:, names.index(task.target)].astype(np.float32))
    full = MultiTaskDataset(torch.from_numpy(x.astype(np.float32)), targets)
    train, val, test = split_for_tasks(chosen, full.targets, full.masks, val_fraction, test_fraction, seed, stratify)
    splits = {"train": full.subset(train), "val": full.subset(val), "test": full.subset(test)}
    for split in splits.values():
        split.apply_conditions(chosen)
    info = {
        "source": "generated (Ma et al. 2018, section 3)",
        "sizes": {k: len(v) for k, v in splits.items()},
        "task_weights": w,
        "alpha": alpha,
        "beta": beta,
        "correlation": correlation,
        "groups": task_groups(num_tasks, groups),
        "stratified": stratify,
    }
    result = DataSplits(splits["train"], splits["val"], splits["test"], chosen, (d,), info)
    result.validate()
    return result
