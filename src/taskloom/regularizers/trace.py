"""Trace-norm (low-rank) regularization over stacked task weights, by singular value thresholding.

Argyriou, Evgeniou & Pontil (2008); Pong et al. (2010); prox by Cai, Candes & Shen (2010).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from taskloom.regularizers.base import Regularizer, _working
from taskloom.regularizers.prox import singular_value_threshold


class TraceNorm(Regularizer):
    """``strength * ||W||_*`` over the parameter-by-task matrix, applied by its prox after each step.

    Scaling (see :class:`~taskloom.regularizers.base.Regularizer`): in the trainer, whose regression
    loss is plain MSE, ``strength`` s is ``alpha = s / 2`` of ``(1/(2n)) ||Y - XW||_F^2 + alpha ||W||_*``
    and MALSAR's trace-norm ``rho1 = n s / 2`` (loss ``(1/2)||Y - XW||_F^2``); under the ``1/(2n)`` loss
    (as in :class:`taskloom.linear.MultiTaskLinear` ``penalty="trace"``) ``alpha = s``, ``rho1 = n s``.
    """

    smooth = False

    def _value(self) -> Tensor:
        return self.strength * torch.linalg.matrix_norm(_working(self.task_matrix()), ord="nuc")

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        tau = lr * self.strength
        if tau > 0:
            W = self.task_matrix()
            self.assign_task_matrix(singular_value_threshold(_working(W), tau).to(W.dtype))

    def report(self) -> dict[str, Any]:
        with torch.no_grad():
            s = torch.linalg.svdvals(_working(self.task_matrix()))
        rank = int((s > s.max() * 1e-6).sum()) if s.numel() and s.max() > 0 else 0
        return {**super().report(), "singular_values": s.tolist(), "rank": rank}
