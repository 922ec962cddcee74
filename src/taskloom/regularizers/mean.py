"""Mean-regularized multi-task learning (Evgeniou & Pontil 2004): tasks pulled toward their mean."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from taskloom.regularizers.base import Regularizer


def mean_penalty(W: Tensor) -> Tensor:
    """``sum_t ||w_t - w_bar||^2`` = ``tr(W L W^T) / T`` with ``L`` the complete task graph's Laplacian."""
    return (W - W.mean(dim=1, keepdim=True)).pow(2).sum()


class MeanRegularized(Regularizer):
    """``strength * sum_t ||w_t - mean_s w_s||^2`` over each task's selected parameters (a smooth penalty).

    Scaling (see :class:`~taskloom.regularizers.base.Regularizer`): in the trainer, whose regression
    loss is plain MSE, ``strength`` s is ``alpha = s / 2`` of ``(1/(2n)) ||Y - XW||_F^2 + alpha P(W)``
    and a MALSAR-style ``rho1 = n s / 2`` (loss ``(1/2)||Y - XW||_F^2``); under the ``1/(2n)`` loss
    (as in :class:`taskloom.linear.MultiTaskLinear` ``penalty="mean"``) ``alpha = s``, ``rho1 = n s``.
    """

    def penalty(self) -> Tensor | None:
        return self.strength * mean_penalty(self.task_matrix()) if self.strength > 0 else None

    def _value(self) -> Tensor:
        return self.strength * mean_penalty(self.task_matrix())

    def report(self) -> dict[str, Any]:
        with torch.no_grad():
            W = self.task_matrix()
            distance = (W - W.mean(dim=1, keepdim=True)).norm(dim=0)
        return {**super().report(), "distance_to_mean": dict(zip(self.task_names, distance.tolist()))}
