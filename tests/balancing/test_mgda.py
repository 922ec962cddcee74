"""MGDA (Sener & Koltun 2018): simplex weights whose combination is the min-norm point of the convex hull."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from balancing._gradient_helpers import random_grads
from taskloom.balancing import aggregate
from taskloom.balancing.mgda import best_pair, mgda_weights, pair_min_norm


def scipy_min_norm(grads: torch.Tensor) -> np.ndarray:
    g = grads.numpy()
    gram = g @ g.T
    k = len(g)
    result = minimize(lambda w: w @ gram @ w, np.full(k, 1 / k), jac=lambda w: 2 * gram @ w, method="SLSQP",
                      bounds=[(0, 1)] * k, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                      options={"ftol": 1e-16, "maxiter": 1000})
    return result.x @ g


@pytest.mark.parametrize("solver", ["active_set", "frank_wolfe"])
@pytest.mark.parametrize("k", [2, 3, 5, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_norm_point_matches_a_brute_force_qp(k, seed, solver):
    grads = random_grads(k, 20, seed=seed)
    weights = mgda_weights(grads @ grads.T, solver=solver)
    assert weights.min() >= 0
    assert abs(float(weights.sum()) - 1) < 1e-9
    expected = torch.from_numpy(scipy_min_norm(grads))
    torch.testing.assert_close(weights @ grads, expected, atol=1e-5, rtol=0)


def test_min_norm_is_not_beaten_by_any_vertex_or_random_point():
    grads = random_grads(6, 10, seed=4)
    norm = float((aggregate("mgda", grads)).norm())
    exponentials = -torch.rand((500, 6), generator=torch.Generator().manual_seed(0), dtype=torch.float64).log()
    others = exponentials / exponentials.sum(dim=1, keepdim=True)  # uniform points of the simplex
    assert norm <= float((others @ grads).norm(dim=1).min()) + 1e-12
    assert norm <= float(grads.norm(dim=1).min()) + 1e-12


def test_two_vectors_closed_form():
    g1 = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    g2 = torch.tensor([-1.0, 1.0, 0.5], dtype=torch.float64)
    gamma = ((g2 - g1) @ g2) / ((g1 - g2) @ (g1 - g2))
    grads = torch.stack([g1, g2])
    torch.testing.assert_close(mgda_weights(grads @ grads.T), torch.stack([gamma, 1 - gamma]))
    torch.testing.assert_close(pair_min_norm(g1 @ g1, g1 @ g2, g2 @ g2), gamma)
    # one vector already inside the other's half-space: the shorter one alone
    short = torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    long = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(aggregate("mgda", torch.stack([short, long])), short)


def test_zero_in_the_hull_gives_a_zero_update():
    grads = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(aggregate("mgda", grads), torch.zeros(2, dtype=torch.float64), atol=1e-8, rtol=0)


def test_l2_normalization_uses_unit_gradients():
    grads = random_grads(3, 6, seed=5)
    unit = grads / grads.norm(dim=1, keepdim=True)
    torch.testing.assert_close(aggregate("mgda", grads, normalize="l2"), aggregate("mgda", unit))
    with pytest.raises(ValueError, match="normalize"):
        aggregate("mgda", grads, normalize="loss")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_degenerate_problems_more_tasks_than_dimensions_or_duplicates(seed):
    generator = torch.Generator().manual_seed(seed)
    grads = torch.randn(9, 4, generator=generator, dtype=torch.float64)
    grads[-1] = 2 * grads[0]
    weights = mgda_weights(grads @ grads.T)
    assert weights.min() >= 0 and abs(float(weights.sum()) - 1) < 1e-9
    expected = torch.from_numpy(scipy_min_norm(grads))
    torch.testing.assert_close(weights @ grads, expected, atol=1e-5, rtol=0)


def test_frank_wolfe_starts_from_the_best_pair():
    # pairs' min-norm points by the closed form: (0, 1): gamma 1/13, |.|^2 = 832/169; (0, 2): g2 alone, 2;
    # (1, 2): gamma 1/3, point [1, 0], |.|^2 = 1 (the best, not the first pair)
    grads = torch.tensor([[4.0, 0.0], [1.0, 2.0], [1.0, -1.0]], dtype=torch.float64)
    i, j, gamma = best_pair(grads @ grads.T)
    assert sorted((int(i), int(j))) == [1, 2]
    first = float(gamma) if int(i) == 1 else 1 - float(gamma)
    assert first == pytest.approx(1 / 3)
    # here the best pair's point is already the min-norm point of the whole hull
    weights = mgda_weights(grads @ grads.T, solver="frank_wolfe", max_iter=1)
    torch.testing.assert_close(weights, torch.tensor([0.0, 1 / 3, 2 / 3], dtype=torch.float64))


def test_solvers_are_named_and_the_default_is_documented():
    from taskloom.balancing.mgda import MGDA

    assert "active_set" in MGDA.__doc__ and "frank_wolfe" in MGDA.__doc__ and "default" in MGDA.__doc__
    with pytest.raises(ValueError, match="frank_wolfe"):
        mgda_weights(torch.eye(2, dtype=torch.float64), solver="simplex")
