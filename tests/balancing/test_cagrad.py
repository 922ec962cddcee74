"""CAGrad (Liu et al. 2021): the average gradient at c = 0; otherwise the best worst-task update in the ball."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from balancing._gradient_helpers import random_grads
from taskloom.balancing import aggregate
from taskloom.balancing.cagrad import _dual_by_projected_gradient, cagrad_dual


def test_c_zero_is_the_average_gradient():
    grads = random_grads(4, 9, seed=0)
    torch.testing.assert_close(aggregate("cagrad", grads, c=0.0), grads.mean(dim=0))


@pytest.mark.parametrize("c", [0.2, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_is_in_the_ball_and_maximizes_the_worst_task(c, seed):
    grads = random_grads(4, 6, seed=seed)
    g0 = grads.mean(dim=0)
    d = aggregate("cagrad", grads, c=c)
    radius = c * float(g0.norm())
    assert float((d - g0).norm()) <= radius * (1 + 1e-9)
    g = grads.numpy()
    center = g0.numpy()
    best = minimize(lambda x: -x[-1], np.append(center, (g @ center).min()), method="SLSQP",
                    constraints=[{"type": "ineq", "fun": lambda x: g @ x[:-1] - x[-1]},
                                 {"type": "ineq", "fun": lambda x: radius**2 - ((x[:-1] - center) ** 2).sum()}],
                    options={"ftol": 1e-14, "maxiter": 500})
    assert float((grads @ d).min()) >= -best.fun - 1e-5


def test_rescale_divides_by_one_plus_c_squared():
    grads = random_grads(3, 5, seed=3)
    expected = aggregate("cagrad", grads, c=0.5) / 1.25
    torch.testing.assert_close(aggregate("cagrad", grads, c=0.5, rescale=True), expected)
    with pytest.raises(ValueError, match="c must be"):
        aggregate("cagrad", grads, c=-1.0)


def test_two_orthogonal_unit_gradients_by_hand():
    # by symmetry w = (1/2, 1/2), g_w = g0, so d = g0 + c ||g0|| g0 / ||g0|| = (1 + c) g0
    grads = torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(aggregate("cagrad", grads, c=0.5), torch.tensor([0.75, 0.75], dtype=torch.float64))


def _worst_task_bound(grads: torch.Tensor, radius: float) -> float:
    """max_d min_i g_i . d over the ball ||d - g0|| <= radius, by a generic solver."""
    g, center = grads.numpy(), grads.mean(dim=0).numpy()
    best = minimize(lambda x: -x[-1], np.append(center, (g @ center).min()), method="SLSQP",
                    constraints=[{"type": "ineq", "fun": lambda x: g @ x[:-1] - x[-1]},
                                 {"type": "ineq", "fun": lambda x: radius**2 - ((x[:-1] - center) ** 2).sum()}],
                    options={"ftol": 1e-14, "maxiter": 500})
    return -best.fun


@pytest.mark.parametrize("k", [10, 12])
def test_many_tasks_use_the_iterative_solver_and_keep_the_property(k):
    grads = random_grads(k, 16, seed=k)
    g0 = grads.mean(dim=0)
    d = aggregate("cagrad", grads, c=0.5)
    radius = 0.5 * float(g0.norm())
    assert float((d - g0).norm()) <= radius * (1 + 1e-9)
    assert float((grads @ d).min()) >= _worst_task_bound(grads, radius) - 1e-5


def _problem(kind: str, seed: int) -> torch.Tensor:
    grads = random_grads(6, 5, seed=seed) * torch.logspace(0, 2, 6, dtype=torch.float64).unsqueeze(1)
    if kind == "more_tasks_than_dimensions":
        grads = grads[:, :3]
    elif kind == "cancelling_pair":  # 0 is in the hull: the minimum 0 sits where F is not smooth
        grads[1] = -3 * grads[0]
    elif kind == "zero_gradient":
        grads[2] = 0
    return grads


@pytest.mark.parametrize("c", [0.6, 2.0])
@pytest.mark.parametrize("kind", ["random", "more_tasks_than_dimensions", "cancelling_pair", "zero_gradient"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_solution_is_the_dual_minimum(seed, kind, c):
    grads = _problem(kind, seed)
    gram = grads @ grads.T
    b, radius = gram.mean(dim=1), c * float(gram.mean().sqrt())

    def dual(w):
        return float(w @ b + radius * (w @ gram @ w).clamp_min(0).sqrt())

    w = cagrad_dual(gram, c)
    assert float(w.min()) >= 0 and abs(float(w.sum()) - 1) < 1e-12
    exponentials = -torch.rand((2000, 6), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).log()
    others = exponentials / exponentials.sum(dim=1, keepdim=True)
    values = others @ b + radius * ((others @ gram) * others).sum(dim=1).clamp_min(0).sqrt()
    tol = 1e-12 * float(gram.diagonal().max())
    assert dual(w) <= float(values.min()) + tol
    assert dual(w) <= min(dual(e) for e in torch.eye(6, dtype=torch.float64)) + tol
    # the projected-gradient solver, run long, gets no lower
    assert dual(w) <= dual(_dual_by_projected_gradient(gram, c, max_iter=20000, tol=1e-15)) + 1e-9 * float(
        gram.diagonal().max())
    assert torch.isfinite(aggregate("cagrad", grads, c=c)).all()


def test_cancelling_gradients_leave_no_direction_and_give_the_mean():
    grads = torch.tensor([[1.0, 0.0], [-2.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(aggregate("cagrad", grads, c=2.0), grads.mean(dim=0))
