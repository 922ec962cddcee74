"""Per-task metrics on labelled rows only; each returns a float, or None where undefined."""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor


def accuracy(predicted: Tensor, target: Tensor) -> float:
    """Fraction of exact matches (element-wise for multi-label targets)."""
    return (predicted == target).float().mean().item()


def macro_f1(predicted: Tensor, target: Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in target or prediction."""
    scores = []
    for c in range(num_classes):
        tp = ((predicted == c) & (target == c)).sum().item()
        fp = ((predicted == c) & (target != c)).sum().item()
        fn = ((predicted != c) & (target == c)).sum().item()
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def auroc(score: Tensor, target: Tensor) -> float | None:
    """Area under the ROC curve by the Mann-Whitney rank statistic (ties get average ranks).

    None when the labelled rows hold only one class: the area is undefined there.
    """
    y = target.detach().cpu().numpy().astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(score.detach().cpu().double().numpy())
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def mean_squared_error(predicted: Tensor, target: Tensor) -> float:
    return torch.mean((predicted.double() - target.double()) ** 2).item()


def mean_absolute_error(predicted: Tensor, target: Tensor) -> float:
    return torch.mean((predicted.double() - target.double()).abs()).item()


def r2_score(predicted: Tensor, target: Tensor) -> float | None:
    """Coefficient of determination, averaged uniformly over target columns; None for constant targets."""
    p = predicted.double().reshape(len(predicted), -1)
    t = target.double().reshape(len(target), -1)
    residual = ((t - p) ** 2).sum(0)
    total = ((t - t.mean(0)) ** 2).sum(0)
    if bool((total == 0).any()):
        return None
    return (1 - residual / total).mean().item()
