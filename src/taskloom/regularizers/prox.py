"""Proximal operators and closed-form updates of the cross-task penalties, as pure functions.

Each works on a feature-by-task matrix ``W`` (rows: features, columns: tasks or task outputs)
and is shared by the trainer-facing regularizers and by :class:`taskloom.linear.MultiTaskLinear`.
"""
from __future__ import annotations

import torch
from torch import Tensor


def group_soft_threshold(W: Tensor, tau: float) -> Tensor:
    """Prox of ``tau * sum_j ||W[j, :]||_2`` (L1/L2 block sparsity): shrink each row's norm by ``tau``.

    Rows whose norm is at most ``tau`` become exactly zero (Yuan & Lin 2006; Obozinski et al. 2010).
    """
    norms = W.norm(dim=1, keepdim=True)
    scale = torch.clamp(1.0 - tau / torch.clamp(norms, min=torch.finfo(W.dtype).tiny), min=0.0)
    return W * scale


def project_l1_ball(V: Tensor, radius: Tensor | float) -> Tensor:
    """Euclidean projection of each row of ``V`` onto the L1 ball of ``radius`` (Duchi et al. 2008).

    Sorts absolute values, finds the soft threshold that puts the row on the sphere; rows already
    inside the ball are returned unchanged. ``radius`` is a scalar or one value per row.
    """
    radius = torch.as_tensor(radius, dtype=V.dtype, device=V.device).reshape(-1, 1).expand(V.shape[0], 1)
    magnitude = V.abs()
    u = torch.sort(magnitude, dim=1, descending=True).values
    cumulative = torch.cumsum(u, dim=1)
    j = torch.arange(1, V.shape[1] + 1, dtype=V.dtype, device=V.device)
    active = (u - (cumulative - radius) / j) > 0
    rho = active.sum(dim=1, keepdim=True).clamp(min=1)
    theta = (torch.gather(cumulative, 1, rho - 1) - radius) / rho.to(V.dtype)
    theta = torch.clamp(theta, min=0.0)
    projected = torch.sign(V) * torch.clamp(magnitude - theta, min=0.0)
    return torch.where(radius > 0, projected, torch.zeros_like(V))


def prox_l1inf(W: Tensor, tau: float) -> Tensor:
    """Prox of ``tau * sum_j max_t |W[j, t]|`` (L1/Linf block sparsity), row by row.

    By Moreau's decomposition the prox of ``tau ||.||_inf`` is ``v - P(v)`` with ``P`` the
    projection onto the dual ball ``{||u||_1 <= tau}`` (Quattoni et al. 2009; Duchi et al. 2008).
    """
    return W - project_l1_ball(W, tau)


def singular_value_threshold(W: Tensor, tau: float) -> Tensor:
    """Prox of ``tau * ||W||_*`` (trace norm): soft-threshold the singular values (Cai et al. 2010)."""
    U, s, Vh = torch.linalg.svd(W, full_matrices=False)
    return (U * torch.clamp(s - tau, min=0.0)) @ Vh


def prox_squared_l1(s: Tensor, tau: float) -> Tensor:
    """Prox of ``tau * (sum_i |s_i|)^2`` on a vector: a soft threshold that grows with the kept mass.

    KKT: kept entries are ``|s_i| - 2 tau S`` with ``S`` their sum, so ``S = sum_A |s_i| / (1 + 2 tau |A|)``.
    """
    magnitude = s.abs()
    u = torch.sort(magnitude, descending=True).values
    k = torch.arange(1, s.numel() + 1, dtype=s.dtype, device=s.device)
    thresholds = 2 * tau * torch.cumsum(u, 0) / (1 + 2 * tau * k)
    kept = int((u > thresholds).sum().item())
    if kept == 0:
        return torch.zeros_like(s)
    theta = thresholds[kept - 1]
    return torch.sign(s) * torch.clamp(magnitude - theta, min=0.0)


def prox_squared_trace(W: Tensor, tau: float) -> Tensor:
    """Prox of ``tau * ||W||_*^2``: the squared-L1 prox applied to the singular values.

    This is task-relationship learning with Omega minimized out (Zhang & Yeung 2010; Argyriou et al. 2008).
    """
    U, s, Vh = torch.linalg.svd(W, full_matrices=False)
    return (U * prox_squared_l1(s, tau)) @ Vh


def task_covariance(W: Tensor, eps: float = 0.0) -> Tensor:
    """Closed-form task covariance ``Omega = (W^T W)^{1/2} / tr((W^T W)^{1/2})`` (Zhang & Yeung 2010).

    It minimizes ``tr(W Omega^{-1} W^T)`` over PSD ``Omega`` of trace one, the minimum being
    ``||W||_*^2``. ``eps`` (relative to the mean squared column norm) keeps ``Omega`` invertible.
    """
    T = W.shape[1]
    gram = W.T @ W
    if eps > 0:
        ridge = eps * (torch.trace(gram) / T + torch.finfo(W.dtype).tiny)
        gram = gram + ridge * torch.eye(T, dtype=W.dtype, device=W.device)
    values, vectors = torch.linalg.eigh(gram)
    root = (vectors * torch.sqrt(torch.clamp(values, min=0.0))) @ vectors.T
    total = torch.trace(root)
    if total <= 0:
        return torch.eye(T, dtype=W.dtype, device=W.device) / T
    return root / total


def capped_simplex_weights(sigma: Tensor, k: float, eta: float, iterations: int = 100) -> Tensor:
    """Solve ``min sum_i sigma_i^2 / (eta + g_i)`` s.t. ``sum g = k, 0 <= g <= 1`` (cluster metric spectrum).

    KKT gives ``g_i = clip(nu sigma_i - eta, 0, 1)``; ``nu`` is found by bisection.
    """
    T = sigma.numel()
    if not 0 < k <= T:
        raise ValueError(f"n_clusters must lie in (0, number of tasks = {T}]; got {k}")
    sigma = torch.clamp(sigma, min=0.0)
    sigma = torch.clamp(sigma, min=float(sigma.max()) * 1e-12 + torch.finfo(sigma.dtype).tiny)
    low, high = 0.0, float((1 + eta) / sigma.min())
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if float(torch.clamp(middle * sigma - eta, 0.0, 1.0).sum()) < k:
            low = middle
        else:
            high = middle
    return torch.clamp(high * sigma - eta, 0.0, 1.0)


def cluster_metric(W: Tensor, n_clusters: float, eta: float) -> Tensor:
    """Closed-form ``M`` of convex clustered MTL: argmin of ``tr(W (eta I + M)^{-1} W^T)``.

    Over ``tr(M) = k, 0 <= M <= I`` (Zhou, Chen & Ye 2011, the MALSAR CMTL relaxation): ``M``
    shares the eigenvectors of ``W^T W`` and its eigenvalues solve the capped-simplex problem.
    """
    values, vectors = torch.linalg.eigh(W.T @ W)
    g = capped_simplex_weights(torch.sqrt(torch.clamp(values, min=0.0)), n_clusters, eta)
    return (vectors * g) @ vectors.T
