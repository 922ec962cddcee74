"""ConFIG (Liu et al. 2024): the update has the same positive cosine with every task gradient."""
from __future__ import annotations

import math

import pytest
import torch

from balancing._gradient_helpers import TASKS, losses_from, make_data, make_model, random_grads
from taskloom.balancing import aggregate, build_balancer
from taskloom.balancing.config_grad import config_weights

F64 = torch.float64


def cosines(grads: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    return grads @ update / (grads.norm(dim=1) * update.norm())


@pytest.mark.parametrize("k,p", [(2, 5), (3, 8), (5, 20), (8, 8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_cosine_with_every_task_gradient_is_the_same_and_positive(k, p, seed):
    grads = random_grads(k, p, seed=seed) * torch.logspace(-1, 2, k, dtype=F64).unsqueeze(1)
    values = cosines(grads, aggregate("config", grads))
    assert values.min() > 0
    torch.testing.assert_close(values, values.mean().expand(k), rtol=1e-8, atol=0)


def test_orthogonal_gradients_by_hand():
    # u = e1, e2; pinv(U) 1 = (1, 1); g_u = (1, 1) / sqrt 2; projections (3 + 4) / sqrt 2; g_c = 3.5 (1, 1)
    grads = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=F64)
    torch.testing.assert_close(aggregate("config", grads), torch.tensor([3.5, 3.5], dtype=F64))


def test_conflicting_pair_by_hand():
    # u1 = (1, 0), u2 = (-1, 1) / sqrt 2: U v = 1 gives v = (1, 1 + sqrt 2), the direction at 67.5 degrees;
    # g_u = (cos 67.5, sin 67.5), projections sum to sin 67.5, so g_c = sin 67.5 g_u = (sqrt 2, 2 + sqrt 2) / 4
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
    expected = torch.tensor([math.sqrt(2) / 4, (2 + math.sqrt(2)) / 4], dtype=F64)
    torch.testing.assert_close(aggregate("config", grads), expected)


@pytest.mark.parametrize("k,p", [(3, 6), (6, 3)])
def test_matches_the_pseudo_inverse_of_the_unit_gradient_matrix(k, p):
    # the paper's formula on the K x P matrix itself (also with more tasks than dimensions: least squares)
    grads = random_grads(k, p, seed=11)
    unit = grads / grads.norm(dim=1, keepdim=True)
    direction = torch.linalg.pinv(unit) @ torch.ones(k, dtype=F64)
    direction = direction / direction.norm()
    torch.testing.assert_close(aggregate("config", grads), (grads @ direction).sum() * direction, rtol=1e-8,
                               atol=1e-10)


def test_rescaling_a_task_keeps_the_direction_and_changes_the_length_by_its_projection():
    grads = random_grads(3, 7, seed=4)
    scaled = grads * torch.tensor([[1.0], [10.0], [1.0]], dtype=F64)
    before, after = aggregate("config", grads), aggregate("config", scaled)
    torch.testing.assert_close(after / after.norm(), before / before.norm())
    unit = before / before.norm()
    torch.testing.assert_close(after.norm(), (scaled @ unit).sum())


def test_no_gradient_or_exactly_opposite_gradients_give_no_update():
    assert torch.equal(config_weights(torch.zeros(3, 3, dtype=F64)), torch.zeros(3, dtype=F64))
    opposite = torch.tensor([[2.0, 0.0], [-1.0, 0.0]], dtype=F64)
    torch.testing.assert_close(aggregate("config", opposite), torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("mode", ["parameters", "representation"])
def test_a_batch_missing_a_task_weighs_only_the_labelled_ones(mode):
    model = make_model()
    balancer = build_balancer("config", TASKS, mode=mode)
    x, targets = make_data()
    del targets["a"]
    balancer.backward(losses_from(balancer.outputs(model, x), targets), model)
    assert set(balancer.last_weights()) == {"b", "c"}
    assert all(p.grad is None for p in model.task_parameters("a"))
    assert all(p.grad is not None and p.grad.any() for p in model.shared_parameters())
