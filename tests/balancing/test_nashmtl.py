"""Nash-MTL (Navon et al. 2022): the weights satisfy the bargaining condition G alpha = 1 / alpha."""
from __future__ import annotations

import pytest
import torch

from balancing._gradient_helpers import random_grads
from taskloom.balancing import aggregate
from taskloom.balancing.nashmtl import NashMTLState, nash_weights


@pytest.mark.parametrize("k", [2, 3, 5, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_bargaining_condition(k, seed):
    grads = random_grads(k, 20, seed=seed) * (1 + torch.arange(k, dtype=torch.float64)).unsqueeze(1)
    gram = grads @ grads.T
    alpha = nash_weights(gram)
    assert alpha.min() > 0
    torch.testing.assert_close(gram @ alpha, 1 / alpha, rtol=1e-6, atol=0)


def test_orthogonal_gradients_give_inverse_norms():
    grads = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    alpha = nash_weights(grads @ grads.T)
    torch.testing.assert_close(alpha, torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(aggregate("nashmtl", grads), torch.ones(3, dtype=torch.float64), rtol=1e-6, atol=0)


def test_warm_start_state_gives_the_same_solution():
    grads = random_grads(4, 10, seed=3)
    state = NashMTLState()
    first = aggregate("nashmtl", grads, state=state)
    assert state.beta is not None
    torch.testing.assert_close(aggregate("nashmtl", grads, state=state), first)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bargaining_condition_holds_tightly_with_norms_spanning_ten_thousand(seed):
    norms = torch.logspace(0, 4, 5, dtype=torch.float64)  # 1 ... 1e4
    grads = random_grads(5, 30, seed=seed)
    grads = grads / grads.norm(dim=1, keepdim=True) * norms.unsqueeze(1)
    gram = grads @ grads.T
    alpha = nash_weights(gram)
    assert alpha.min() > 0
    torch.testing.assert_close(alpha * (gram @ alpha), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-9)


def test_scaling_a_task_scales_its_weight_inversely():
    # with beta solving the unit-diagonal problem, alpha_i = beta_i / ||g_i||: the update does not move
    grads = random_grads(3, 8, seed=4)
    scaled = grads * torch.tensor([[1.0], [1e3], [1e-2]], dtype=torch.float64)
    torch.testing.assert_close(aggregate("nashmtl", scaled), aggregate("nashmtl", grads), rtol=1e-9, atol=1e-12)
