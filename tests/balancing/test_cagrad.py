"""CAGrad (Liu et al. 2021): the average gradient at c = 0; otherwise the best worst-task update in the ball."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from balancing._gradient_helpers import random_grads
from taskloom.balancing import aggregate


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
