"""CAGrad (Liu et al., NeurIPS 2021): the update that most improves the worst task within a ball around the mean.

d = g0 + sqrt(phi) g_w / ||g_w|| with g0 the average gradient, phi = c^2 ||g0||^2 and w the
simplex weights minimizing F(w) = g_w . g0 + sqrt(phi) ||g_w|| (the paper's dual), solved on
the K x K Gram matrix in float64 on the host (one small transfer per step, none per
iteration). Up to ``FACES_UP_TO`` tasks exactly, with a fixed number of batched operations:
on each face of the simplex the stationary point has a closed form, and the best feasible
one is the optimum. Beyond that, projected gradient with Barzilai-Borwein steps, finished by
the same closed form on the support they find.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import AggregatorBalancer
from taskloom.balancing.mgda import min_norm_weights_active_set

#: the largest K solved by enumerating the 2^K - 1 faces of the simplex (255 small solves at 8)
FACES_UP_TO = 8


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


def _dual_on_faces(g: Tensor, c: float) -> tuple[Tensor, Tensor, Tensor]:
    """(w, ||g_w||, c ||g0||) with w minimizing F over the simplex, by the closed form on every face.

    On a face S with w_S > 0, stationarity reads G_S u = (lam 1 - b_S) / r with u = w / ||g_w||,
    u' G_S u = 1 and sum(u) = 1 / ||g_w|| > 0: one quadratic in lam. Every feasible candidate
    is a point of the simplex, so the least F among them is the minimum (the optimum lies on
    a face whose candidate is exact; singular faces only add candidates that cannot win).
    The vertices are exact candidates even for a zero gradient. Where g_w = 0 is in the hull
    (so G is singular) the minimum can sit there, where F is not smooth (for c >= 1 it does:
    F >= (c - 1) ||g0|| ||g_w||): then the hull's min-norm point (MGDA's) is a candidate too.
    Float64 on the host, a fixed number of batched operations.
    """
    k = g.shape[0]
    ones, pairs, vertex, eye = _faces(k)
    b = g.sum(dim=1) / k
    squared_radius = b.sum().clamp_min(0) * (c * c / k)
    systems = torch.where(pairs, g, eye)  # G_S, identity off the face
    factor = torch.linalg.cholesky_ex(systems).L  # a singular face gives garbage that cannot win below
    rhs = ones.unsqueeze(2) * torch.stack([torch.ones_like(b), b], dim=1)
    y1, yb = torch.cholesky_solve(rhs, factor).unbind(dim=2)  # zero off the face
    q1, qb = y1.sum(dim=1), yb.sum(dim=1)
    discriminant = qb * qb - q1 * (yb @ b - squared_radius)
    root = discriminant.clamp_min(0).sqrt()
    w = ((qb + root) / q1).unsqueeze(1) * y1 - yb
    w = torch.where(vertex, ones, w / root.unsqueeze(1))
    feasible = (discriminant > 0) | vertex.squeeze(1)
    if c >= 1 or bool(factor[-1].diagonal().min() ** 2 <= 1e-12 * g.diagonal().max()):  # G (all tasks) singular
        closest = min_norm_weights_active_set(g).to(w)
        w = torch.cat([w, (closest / closest.sum()).unsqueeze(0)])
        feasible = torch.cat([feasible, feasible.new_ones(1)])
    radius = squared_radius.sqrt()
    norm = ((w @ g) * w).sum(dim=1).clamp_min(0).sqrt()
    value = w @ b + radius * norm
    feasible = feasible & (w >= -1e-9).all(dim=1) & (value < float("inf"))
    best = int(torch.where(feasible, value, float("inf")).argmin())
    w = w[best].clamp_min(0)
    return w / w.sum(), norm[best], radius


@functools.lru_cache(maxsize=FACES_UP_TO)
def _faces(k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The 2^K - 1 faces of the simplex as 0/1 rows, their K x K masks, which are vertices, and the identity.

    Constants of K, memoized (never written to), so a step does not rebuild them.
    """
    bits = torch.arange(1, 2**k).unsqueeze(1) >> torch.arange(k)
    ones = (bits & 1).to(torch.float64)
    faces = ones > 0
    vertex = ones.sum(dim=1, keepdim=True) == 1
    return ones, faces.unsqueeze(2) & faces.unsqueeze(1), vertex, torch.eye(k, dtype=torch.float64)


def _on_face(g: Tensor, b: Tensor, squared_radius: Tensor, face: Tensor, shrink: int = 2) -> Tensor | None:
    """The stationary point of F on one face (a K-vector of booleans) in closed form, or None if it is outside.

    Where some weights come out negative the face is too large: it drops them and tries again
    (``shrink`` times), as a primal active-set step would.
    """
    k = g.shape[0]
    eye = torch.eye(k, dtype=g.dtype)
    for _ in range(shrink + 1):
        factor, failed = torch.linalg.cholesky_ex(torch.where(face.unsqueeze(1) & face.unsqueeze(0), g, eye))
        if bool(failed):
            return None
        ones = face.to(g.dtype)
        y1, yb = torch.cholesky_solve(torch.stack([ones, ones * b], dim=1), factor).unbind(dim=1)
        q1, qb = float(y1.sum()), float(yb.sum())
        discriminant = qb * qb - q1 * float(yb @ b - squared_radius)
        if not discriminant > 0:
            return None
        root = discriminant**0.5
        w = ((qb + root) / q1 * y1 - yb) / root
        if float(w.min()) >= -1e-12:
            w = w.clamp_min(0)
            return w / w.sum()
        face = face & (w > 0)
    return None


def _exact_near(g: Tensor, b: Tensor, squared_radius: Tensor, support: Tensor, grad_of, additions: int = 2):
    """The minimizer in closed form if it lies on ``support`` or on it plus up to ``additions`` tasks, else None.

    Each candidate is checked by the KKT conditions (with lam = F(w): no task's partial
    derivative below lam), so only the optimum is ever returned.
    """
    for _ in range(additions + 1):
        exact = _on_face(g, b, squared_radius, support)
        if exact is None:
            return None
        exact_grad = grad_of(exact)
        slack = exact_grad - exact @ exact_grad  # >= 0 everywhere at the optimum (0 on the support)
        worst = int(slack.argmin())
        if float(slack[worst]) >= -1e-9 * (float(exact_grad.abs().max()) + 1e-300):
            return exact
        support = (exact > 0).index_fill(0, torch.tensor([worst]), True)
    return None


def _dual_by_projected_gradient(g: Tensor, c: float, max_iter: int = 1000, tol: float = 1e-10,
                                check_every: int = 4) -> Tensor:
    """The same minimizer by projected gradient with Barzilai-Borwein steps (float64, on the host).

    Once the support has stayed the same for ``check_every`` steps, the closed form on it is
    tried (adding the tasks the KKT test asks for): one that meets the KKT conditions (no
    task outside the support would lower F) is the exact answer.
    """
    k = g.shape[0]
    b = g.mean(dim=1)
    squared_radius = (c * c) * b.mean().clamp_min(0)
    radius = squared_radius.sqrt()
    eps = 1e-12 * g.diagonal().max().clamp_min(1e-300)

    def grad_of(w: Tensor) -> Tensor:
        gw = g @ w
        return b + radius * gw / (w @ gw + eps).sqrt()

    w = torch.full((k,), 1.0 / k, dtype=torch.float64)
    grad = grad_of(w)
    step = 1.0 / float(g.diagonal().max().clamp_min(1e-300).sqrt() * (radius + 1) + g.diagonal().max())
    previous = tried = None
    for iteration in range(1, max_iter + 1):
        new = project_simplex(w - step * grad)
        new_grad = grad_of(new)
        dw, dg = new - w, new_grad - grad
        moved = float(dw.abs().max())
        w, grad = new, new_grad
        if moved < tol:
            break
        if iteration % check_every == 0:
            support = w > 0
            settled, previous = previous is not None and torch.equal(support, previous), support
            if settled and (tried is None or not torch.equal(support, tried)):
                tried = support
                exact = _exact_near(g, b, squared_radius, support, grad_of)
                if exact is not None:
                    return exact
        curvature = float(dw @ dg)
        step = float(dw @ dw) / curvature if curvature > 0 else step * 2
    return w


def cagrad_dual(gram: Tensor, c: float, max_iter: int = 1000, tol: float = 1e-10) -> Tensor:
    """The simplex weights w minimizing w . G 1/K + c ||g0|| sqrt(w' G w), in float64.

    Exactly on the faces up to ``FACES_UP_TO`` tasks, else by projected gradient (``max_iter``
    and ``tol`` apply to that solver only); on the host, returned on the Gram matrix's device.
    """
    g = gram.detach().to("cpu", torch.float64)
    if g.shape[0] <= FACES_UP_TO:
        return _dual_on_faces(g, c)[0].to(gram.device)
    return _dual_by_projected_gradient(g, c, max_iter, tol).to(gram.device)


def cagrad_weights(gram: Tensor, c: float = 0.4, rescale: bool = False, max_iter: int = 1000) -> Tensor:
    """Task weights with CAGrad's update = weights @ grads; ``rescale`` divides by 1 + c^2 (the authors' code)."""
    if c < 0:
        raise ValueError(f"cagrad c must be >= 0, got {c!r}")
    k = gram.shape[0]
    if c == 0:
        return torch.full((k,), 1.0 / k, dtype=gram.dtype, device=gram.device)
    g = gram.detach().to("cpu", torch.float64)
    if k <= FACES_UP_TO:
        w, norm_w, radius = _dual_on_faces(g, c)
    else:
        w = _dual_by_projected_gradient(g, c, max_iter)
        norm_w = (w @ g @ w).clamp_min(0).sqrt()
        radius = c * g.mean().clamp_min(0).sqrt()  # c ||g0||
    # g_w at the gram's rounding level (0 in the hull: the tasks cancel) has no direction: the update is the mean
    noise = torch.finfo(gram.dtype).eps ** 0.5 * g.diagonal().max().clamp_min(0).sqrt()
    weights = torch.where(norm_w > noise, radius / norm_w, 0.0) * w + 1.0 / k
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
                 c: float = 0.4, rescale: bool = False, task_chunk: int | None = None,
                 engine: str = "auto") -> None:
        if not c >= 0:
            raise ValueError(f"balancing.options.c must be a number >= 0, got {c!r}")
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine, c=c,
                         rescale=rescale)
