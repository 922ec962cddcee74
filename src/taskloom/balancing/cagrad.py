"""CAGrad (Liu et al., NeurIPS 2021): the update that most improves the worst task within a ball around the mean.

d = g0 + sqrt(phi) g_w / ||g_w|| with g0 the average gradient, phi = c^2 ||g0||^2 and w the
simplex weights minimizing g_w . g0 + sqrt(phi) ||g_w|| (the paper's dual). The dual is
solved on the K x K Gram matrix, in float64 on the host (one small transfer per step), by
projected gradient with Barzilai-Borwein steps; the update is a weighted sum of the rows.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import AggregatorBalancer


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of the last axis of ``v`` onto the probability simplex."""
    k = v.shape[-1]
    u, _ = torch.sort(v, dim=-1, descending=True)
    cumsum = u.cumsum(dim=-1) - 1
    ks = torch.arange(1, k + 1, dtype=v.dtype, device=v.device)
    support = (u - cumsum / ks) > 0
    rho = support.to(v.dtype).cumsum(dim=-1).argmax(dim=-1, keepdim=True)
    theta = cumsum.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0)


def cagrad_dual(gram: Tensor, c: float, max_iter: int = 1000, tol: float = 1e-10) -> Tensor:
    """The simplex weights w minimizing w . G 1/K + c ||g0|| sqrt(w' G w) (float64, on the host)."""
    g = gram.detach().to("cpu", torch.float64)
    k = g.shape[0]
    b = g.mean(dim=1)
    radius = c * b.mean().clamp_min(0).sqrt()
    eps = 1e-12 * g.diagonal().max().clamp_min(1e-300)

    def grad_of(w: Tensor) -> Tensor:
        gw = g @ w
        return b + radius * gw / (w @ gw + eps).sqrt()

    w = torch.full((k,), 1.0 / k, dtype=torch.float64)
    grad = grad_of(w)
    step = 1.0 / float(g.diagonal().max().clamp_min(1e-300).sqrt() * (radius + 1) + g.diagonal().max())
    for _ in range(max_iter):
        new = project_simplex(w - step * grad)
        new_grad = grad_of(new)
        dw, dg = new - w, new_grad - grad
        moved = float(dw.abs().max())
        w, grad = new, new_grad
        if moved < tol:
            break
        curvature = float(dw @ dg)
        step = float(dw @ dw) / curvature if curvature > 0 else step * 2
    return w


def cagrad_weights(gram: Tensor, c: float = 0.4, rescale: bool = False, max_iter: int = 1000) -> Tensor:
    """Task weights with CAGrad's update = weights @ grads; ``rescale`` divides by 1 + c^2 (the authors' code)."""
    if c < 0:
        raise ValueError(f"cagrad c must be >= 0, got {c!r}")
    k = gram.shape[0]
    uniform = torch.full((k,), 1.0 / k, dtype=torch.float64)
    if c == 0:
        return uniform.to(gram.device, gram.dtype)
    g = gram.detach().to("cpu", torch.float64)
    w = cagrad_dual(g, c, max_iter=max_iter)
    norm0 = (uniform @ g @ uniform).clamp_min(0).sqrt()
    norm_w = (w @ g @ w).clamp_min(0).sqrt()
    scale = torch.where(norm_w > 0, c * norm0 / norm_w.clamp_min(1e-300), torch.zeros_like(norm_w))
    weights = uniform + scale * w
    if rescale:
        weights = weights / (1 + c**2)
    return weights.to(gram.device, gram.dtype)


def cagrad(grads: Tensor, c: float = 0.4, rescale: bool = False, max_iter: int = 1000) -> Tensor:
    """CAGrad's update direction from the K x P gradient matrix."""
    return cagrad_weights(grads @ grads.T, c, rescale, max_iter) @ grads


class CAGrad(AggregatorBalancer):
    """CAGrad (Liu et al. 2021): conflict-averse update in a ball of radius c ||g0|| around the mean gradient."""

    weights_fn = cagrad_weights

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 c: float = 0.4, rescale: bool = False) -> None:
        if not c >= 0:
            raise ValueError(f"balancing.c must be a number >= 0, got {c!r}")
        super().__init__(task_names, mode=mode, batched=batched, c=c, rescale=rescale)
