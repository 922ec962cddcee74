"""Block-sparse L1/Lq regularization across tasks (q = 2 or infinity): tasks choose features together.

Obozinski, Taskar & Jordan (2010) for L1/L2; Quattoni et al. (2009) for L1/Linf. Applied by a
proximal step after the optimizer step, which gives exact zero rows (a subgradient never does).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from taskloom.regularizers.base import ParameterSelection, Regularizer
from taskloom.regularizers.prox import group_soft_threshold, prox_l1inf


class BlockSparse(Regularizer):
    """``strength * sum_j ||W[j, :]||_q`` over the feature-by-task matrix, by its proximal operator.

    Scaling (see :class:`~taskloom.regularizers.base.Regularizer`): in the trainer, whose regression
    loss is plain MSE, ``strength`` s is scikit-learn's ``MultiTaskLasso(alpha=s / 2)`` (q = 2) and
    MALSAR's ``rho1 = n s / 2`` (loss ``(1/2)||Y - XW||_F^2``); under scikit-learn's loss
    ``(1/(2n)) ||Y - XW||_F^2`` (as in :class:`taskloom.linear.MultiTaskLinear`) ``alpha = s``, ``rho1 = n s``.
    """

    smooth = False

    def __init__(self, model: nn.Module, parameters: ParameterSelection = None, strength: float = 1e-3,
                 q: float | str = 2, tasks: list[str] | None = None) -> None:
        super().__init__(model, parameters, strength, tasks)
        if q in (2, 2.0, "2"):
            self.q = 2.0
        elif q in (float("inf"), "inf", "infinity"):
            self.q = float("inf")
        else:
            raise ValueError(f"q must be 2 or 'inf'; got {q!r}")
        self.feature_matrix()

    def _value(self) -> Tensor:
        W = self.feature_matrix()
        rows = W.norm(dim=1) if self.q == 2 else W.abs().amax(dim=1)
        return self.strength * rows.sum()

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        tau = lr * self.strength
        if tau <= 0:
            return
        W = self.feature_matrix()
        shrunk = group_soft_threshold(W, tau) if self.q == 2 else prox_l1inf(W, tau)
        if self.q == 2:
            norms = W.norm(dim=1)
            scale = torch.where(norms > 0, shrunk.norm(dim=1) / torch.clamp(norms, min=torch.finfo(W.dtype).tiny),
                                torch.zeros_like(norms))
            self.scale_features(scale)
            return
        offset = 0
        for tensors in self.groups.values():
            for tensor in tensors:
                width = tensor.shape[0]
                tensor.copy_(shrunk[:, offset:offset + width].T.reshape(tensor.shape))
                offset += width

    def report(self) -> dict[str, Any]:
        with torch.no_grad():
            W = self.feature_matrix()
            zero = int((W.abs().amax(dim=1) == 0).sum())
        return {**super().report(), "q": "inf" if self.q == float("inf") else 2, "zero_rows": zero,
                "rows": int(W.shape[0]), "row_sparsity": zero / max(int(W.shape[0]), 1)}


class L21(BlockSparse):
    """Block-sparse L1/L2 (group lasso across tasks): rows of W shrink together, exact zeros by prox."""

    def __init__(self, model: nn.Module, parameters: ParameterSelection = None, strength: float = 1e-3,
                 tasks: list[str] | None = None) -> None:
        super().__init__(model, parameters, strength, q=2, tasks=tasks)


class L1Inf(BlockSparse):
    """Block-sparse L1/Linf: each row costs its largest magnitude; prox via L1-ball projection (Moreau)."""

    def __init__(self, model: nn.Module, parameters: ParameterSelection = None, strength: float = 1e-3,
                 tasks: list[str] | None = None) -> None:
        super().__init__(model, parameters, strength, q="inf", tasks=tasks)
