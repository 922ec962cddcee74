"""UPGrad (Quinton & Rey 2024): mean of dual-cone projections; never conflicts with any task."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from balancing._gradient_helpers import random_grads
from taskloom.balancing import aggregate
from taskloom.balancing.upgrad import box_qp


def scipy_projection(grads: np.ndarray, i: int) -> np.ndarray:
    """Projection of g_i onto the dual cone {x : G x >= 0}, by a generic solver."""
    target = grads[i]
    result = minimize(lambda x: ((x - target) ** 2).sum(), target.copy(), jac=lambda x: 2 * (x - target),
                      method="SLSQP", constraints=[{"type": "ineq", "fun": lambda x: grads @ x,
                                                    "jac": lambda x: grads}],
                      options={"ftol": 1e-15, "maxiter": 1000})
    return result.x


@pytest.mark.parametrize("k", [2, 3, 5, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_non_conflicting_and_equal_to_the_mean_of_projections(k, seed):
    grads = random_grads(k, 10, seed=seed)
    d = aggregate("upgrad", grads)
    assert float((grads @ d).min()) >= -1e-9
    weights = box_qp(grads @ grads.T, torch.eye(k, dtype=torch.float64))
    for i in range(k):
        expected = scipy_projection(grads.numpy(), i)
        torch.testing.assert_close(weights[i] @ grads, torch.from_numpy(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(d, (weights @ grads).mean(dim=0))


def test_no_conflict_gives_the_mean():
    grads = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(aggregate("upgrad", grads), grads.mean(dim=0))


def test_scaling_one_task_keeps_the_update_non_conflicting():
    grads = random_grads(4, 6, seed=5)
    scaled = grads * torch.tensor([[1.0], [100.0], [0.01], [3.0]], dtype=torch.float64)
    d = aggregate("upgrad", scaled)
    assert float((scaled @ d).min()) >= -1e-9 * float(scaled.norm()) ** 2


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_degenerate_problems_stay_non_conflicting(seed):
    generator = torch.Generator().manual_seed(seed)
    grads = torch.randn(9, 4, generator=generator, dtype=torch.float64)
    grads[-1] = 2 * grads[0]
    d = aggregate("upgrad", grads)
    assert float((grads @ d).min()) >= -1e-9 * float(grads.norm()) ** 2
    weights = box_qp(grads @ grads.T, torch.eye(9, dtype=torch.float64))
    assert (weights >= torch.eye(9, dtype=torch.float64) - 1e-12).all()
    for i in (0, 4):
        expected = scipy_projection(grads.numpy(), i)
        torch.testing.assert_close(weights[i] @ grads, torch.from_numpy(expected), atol=1e-5, rtol=0)
