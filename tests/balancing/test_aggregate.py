"""The aggregate() registry: every gradient method by name, as a pure function of a K x P matrix."""
from __future__ import annotations

import pytest
import torch

from balancing._gradient_helpers import GRADIENT_METHODS, random_grads
from taskloom.balancing import AGGREGATORS, BALANCERS, aggregate


def test_every_gradient_balancer_has_a_pure_aggregator():
    assert sorted(GRADIENT_METHODS) == sorted(AGGREGATORS)
    for name in GRADIENT_METHODS:
        assert name in BALANCERS
        assert BALANCERS.get(name).needs_task_gradients


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_returns_a_finite_p_vector(name):
    grads = random_grads(5, 12, seed=1)
    direction = aggregate(name, grads)
    assert direction.shape == (12,)
    assert torch.isfinite(direction).all()


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_one_task_moves_along_its_own_gradient(name):
    grads = random_grads(1, 7, seed=2)
    direction = aggregate(name, grads)
    cosine = torch.nn.functional.cosine_similarity(direction, grads[0], dim=0)
    assert cosine > 1 - 1e-9


def test_refuses_a_non_matrix_and_unknown_names():
    with pytest.raises(ValueError, match="K x P"):
        aggregate("mgda", torch.zeros(3))
    with pytest.raises(KeyError, match="known"):
        aggregate("nope", torch.zeros(2, 3))
