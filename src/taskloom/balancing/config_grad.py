"""ConFIG (Liu, Chu & Thuerey 2024, "ConFIG: towards conflict-free training of physics informed neural networks").

The direction g_u is the unit vector of pinv(U) 1, with U the K x P matrix of unit gradients: it has
the same cosine with every task gradient. The update is g_c = (sum_i g_i . g_u) g_u. Because
pinv(U) = U' (U U')^+, pinv(U) 1 = sum_i c_i u_i with c = (U U')^+ 1, and U U' is the Gramian
rescaled to unit diagonal: everything is read off the K x K Gramian (float64 on the host).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import AggregatorBalancer


def config_weights(gram: Tensor) -> Tensor:
    """Weights w with ConFIG's update g_c = w @ grads, from the K x K Gramian (one host transfer).

    The pseudo-inverse drops directions below the gradients' precision (as IMTL-G does), so
    parallel or dependent gradients still give the least-squares direction; where it is zero (exactly
    opposite gradients: no direction has a positive cosine with both) the update is zero.
    """
    k = gram.shape[0]
    g = gram.detach().to("cpu", torch.float64)
    norms = g.diagonal().clamp_min(0).sqrt()
    largest = float(norms.max()) if k else 0.0
    if not largest > 0:
        return torch.zeros(k, dtype=gram.dtype, device=gram.device)
    norms = norms.clamp_min(largest * 1e-12)
    unit = g / (norms[:, None] * norms[None, :])  # U U'
    precision = torch.finfo(gram.dtype).eps ** 0.5
    coefficients = torch.linalg.pinv(unit, atol=precision, hermitian=True) @ torch.ones(k, dtype=g.dtype)
    a = coefficients / norms  # pinv(U) 1 = a @ grads
    squared = a @ g @ a  # ||pinv(U) 1||^2
    if not float(squared) > 0:
        return torch.zeros(k, dtype=gram.dtype, device=gram.device)
    projections = (g @ a).sum()  # sum_i g_i . pinv(U) 1
    return (projections / squared * a).to(gram.device, gram.dtype)


def config_grad(grads: Tensor) -> Tensor:
    """ConFIG's update direction from the K x P gradient matrix."""
    return config_weights(grads @ grads.T) @ grads


class ConFIG(AggregatorBalancer):
    """ConFIG (Liu et al. 2024): the direction of equal cosine with every task, scaled by the sum of projections."""

    weights_fn = config_weights

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 task_chunk: int | None = None,
                 engine: str = "auto") -> None:
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
