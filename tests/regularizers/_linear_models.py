"""A linear multi-task model (identity trunk, one linear head per task) and its least-squares data."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from taskloom import MultiTaskModel


def linear_model(d: int, tasks: list[str], outputs: int = 1, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(nn.Identity(), heads={name: nn.Linear(d, outputs) for name in tasks})


def regression_problem(n: int, d: int, T: int, informative: int, seed: int = 0, noise: float = 0.1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = np.zeros((d, T))
    W[:informative] = rng.normal(size=(informative, T))
    Y = X @ W + noise * rng.normal(size=(n, T)) + rng.normal(size=T)
    return X, Y, W


def half_mse(model: MultiTaskModel, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """sum_t (1/(2n)) ||y_t - f_t(X)||^2: scikit-learn's multi-task least-squares scaling."""
    outputs = model(X)
    return sum(((outputs[name][:, 0] - Y[:, t]) ** 2).mean() / 2 for t, name in enumerate(model.task_names))


def proximal_gradient(model, regularizer, X, Y, steps: int, extra_curvature: float = 0.0) -> None:
    """Full-batch proximal gradient through the trainer's calls: loss + penalty(), step, proximal_step(lr)."""
    design = np.hstack([X.numpy(), np.ones((X.shape[0], 1))])
    lr = 1.0 / (np.linalg.eigvalsh(design.T @ design)[-1] / X.shape[0] + extra_curvature)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = half_mse(model, X, Y)
        penalty = regularizer.penalty()
        (loss if penalty is None else loss + penalty).backward()
        optimizer.step()
        regularizer.proximal_step(optimizer.param_groups[0]["lr"])
