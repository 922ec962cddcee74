"""IMTL-G (Liu et al., ICLR 2021): the update whose projections onto every task's unit gradient are equal.

With u_i = g_i / ||g_i||, the weights alpha (summing to 1) solve the (K-1) x (K-1) linear
system that makes d . (u_1 - u_i) = 0 for every i; everything is read off the Gram matrix.
Parallel gradients make that system singular (their condition holds for any weights): it is
solved on the host by a pseudo-inverse that drops directions below the gradients' precision,
the same on every device (CUDA's least squares needs full rank).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import AggregatorBalancer


def imtl_g_weights(gram: Tensor) -> Tensor:
    """IMTL-G's weights (summing to 1) from the K x K Gram matrix (float64 on the host, one transfer)."""
    k = gram.shape[0]
    if k == 1:
        return torch.ones(1, dtype=gram.dtype, device=gram.device)
    g = gram.detach().to("cpu", torch.float64)
    norms = g.diagonal().clamp_min(torch.finfo(g.dtype).tiny).sqrt()
    along = g / norms[None, :]  # along[i, j] = g_i . u_j
    system = along[0, 0] - along[0, 1:][None, :] - along[1:, 0][:, None] + along[1:, 1:]
    rhs = along[0, 0] - along[0, 1:]
    # entries are differences of g_i . u_j, known to about eps(dtype) * ||g||: below that, a direction is noise
    precision = torch.finfo(gram.dtype).eps ** 0.5 * norms.max()
    rest = torch.linalg.pinv(system.T, atol=float(precision)) @ rhs
    return torch.cat([(1 - rest.sum()).reshape(1), rest]).to(gram.device, gram.dtype)


def imtl_g(grads: Tensor) -> Tensor:
    """IMTL-G's update direction from the K x P gradient matrix."""
    return imtl_g_weights(grads @ grads.T) @ grads


class IMTLG(AggregatorBalancer):
    """IMTL-G (Liu et al. 2021): impartial update with equal projections on every task's unit gradient."""

    weights_fn = imtl_g_weights

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 task_chunk: int | None = None, engine: str = "auto") -> None:
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
