"""Weights of auxiliary tasks: decay schedules and gradient-similarity gating.

The gating follows Du et al. 2018, "Adapting auxiliary losses using gradient similarity": an
auxiliary loss's gradient on the shared parameters is used only when its cosine similarity with
the main tasks' gradient is positive (unweighted), or scaled by max(0, cos) (weighted).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

SCHEDULES = ("constant", "linear", "cosine")


def scheduled_weight(schedule: str, weight: float, progress: float) -> float:
    """The auxiliary weight at ``progress`` in [0, 1] of training.

    constant: ``weight``; linear: ``weight * (1 - progress)``; cosine:
    ``weight * (1 + cos(pi * progress)) / 2``. The last two reach zero at the end of training.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"auxiliary.schedule {schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")
    if weight < 0:
        raise ValueError(f"auxiliary.weight must be >= 0, got {weight}")
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"training progress must lie in [0, 1], got {progress}")
    if schedule == "constant":
        return weight
    if schedule == "linear":
        return weight * (1.0 - progress)
    return weight * 0.5 * (1.0 + math.cos(math.pi * progress))


def similarity_gates(main_gradients: Tensor, auxiliary_gradients: Tensor, weighted: bool) -> Tensor:
    """Gate per auxiliary task from shared-parameter gradients (Du et al. 2018).

    ``main_gradients`` is (M, P), one row per main task (they are summed); ``auxiliary_gradients``
    is (A, P). Returns A gates: 1 where cos(main sum, auxiliary) > 0 else 0, or max(0, cos) when
    ``weighted``. A zero gradient has no direction and gets gate 0.
    """
    if main_gradients.dim() != 2 or auxiliary_gradients.dim() != 2:
        raise ValueError("gradients must be (tasks, parameters) matrices")
    if main_gradients.shape[1] != auxiliary_gradients.shape[1]:
        raise ValueError(f"main gradients have {main_gradients.shape[1]} parameters, auxiliary gradients "
                         f"{auxiliary_gradients.shape[1]}; both must be taken on the same shared parameters")
    main = main_gradients.sum(dim=0)
    cosine = torch.nn.functional.cosine_similarity(auxiliary_gradients, main.unsqueeze(0), dim=1, eps=1e-12)
    cosine = torch.where((main.norm() == 0) | (auxiliary_gradients.norm(dim=1) == 0),
                         torch.zeros_like(cosine), cosine)
    if weighted:
        return cosine.clamp(min=0.0)
    return (cosine > 0).to(auxiliary_gradients.dtype)
