"""Aligned-MTL (Senushkin et al., CVPR 2023): make the task gradients orthogonal with equal norms, then sum.

With the Gram matrix G = V diag(lambda) V', B = sqrt(lambda_min) V diag(lambda^-1/2) V' turns
the gradient matrix into B G_rows, whose rows are orthogonal with norm sqrt(lambda_min)
(condition number 1); the update is their weighted sum, i.e. weights B w on the rows.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import AggregatorBalancer


def alignment_matrix(gram: Tensor) -> Tensor:
    """B (K x K, float64, on the host: one transfer) with B @ grads orthogonal and of equal norms on their span."""
    g = gram.detach().to("cpu", torch.float64)
    values, vectors = torch.linalg.eigh(g)
    tol = values.max().clamp_min(0) * g.shape[0] * torch.finfo(torch.float32).eps
    kept = values > tol
    smallest = torch.where(kept, values, torch.full_like(values, float("inf"))).min()
    inv_sqrt = torch.where(kept, values.clamp_min(tol).rsqrt(), torch.zeros_like(values))
    smallest = torch.where(torch.isfinite(smallest), smallest, torch.zeros_like(smallest))
    return smallest.sqrt() * (vectors * inv_sqrt) @ vectors.T


def alignedmtl_weights(gram: Tensor, preferences: Sequence[float] | Tensor | None = None) -> Tensor:
    """Aligned-MTL's row weights B @ w (w = the task preferences, ones by default)."""
    b = alignment_matrix(gram)
    w = torch.ones(gram.shape[0], dtype=b.dtype) if preferences is None else \
        torch.as_tensor(preferences, dtype=b.dtype, device="cpu")
    return (b @ w).to(gram.device, gram.dtype)


def alignedmtl(grads: Tensor, preferences: Sequence[float] | Tensor | None = None) -> Tensor:
    """Aligned-MTL's update direction from the K x P gradient matrix."""
    return alignedmtl_weights(grads @ grads.T, preferences) @ grads


class AlignedMTL(AggregatorBalancer):
    """Aligned-MTL (Senushkin et al. 2023): gradients aligned to an orthogonal, equal-norm system."""

    weights_fn = alignedmtl_weights

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 task_chunk: int | None = None, engine: str = "auto") -> None:
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
