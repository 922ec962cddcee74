"""PCGrad (Yu et al. 2020): conflicting pairs are projected onto each other's normal plane, then summed."""
from __future__ import annotations

import torch

from balancing._gradient_helpers import random_grads
from taskloom.balancing import aggregate
from taskloom.balancing.pcgrad import pcgrad_coefficients, projection_orders


def reference(grads: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """The paper's Algorithm 1 on vectors, in the given orders."""
    projected = []
    for i in range(len(grads)):
        g = grads[i].clone()
        for j in orders[i].tolist():
            inner = g @ grads[j]
            if inner < 0:
                g = g - inner / (grads[j] @ grads[j]) * grads[j]
        projected.append(g)
    return torch.stack(projected)


def test_hand_computed_conflicting_pair():
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    coef = pcgrad_coefficients(grads @ grads.T, projection_orders(2, shuffle=False))
    projected = coef @ grads
    torch.testing.assert_close(projected, torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=torch.float64))
    assert projected[0] @ grads[1] >= -1e-12 and projected[1] @ grads[0] >= -1e-12
    torch.testing.assert_close(aggregate("pcgrad", grads, shuffle=False), torch.tensor([0.5, 1.5], dtype=torch.float64))


def test_no_conflict_gives_the_sum():
    grads = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(aggregate("pcgrad", grads), grads.sum(dim=0))


def test_matches_the_algorithm_on_random_matrices():
    for seed in range(4):
        grads = random_grads(5, 9, seed=seed)
        orders = projection_orders(5, torch.Generator().manual_seed(seed))
        assert sorted(orders[2].tolist()) == [0, 1, 3, 4]
        torch.testing.assert_close(pcgrad_coefficients(grads @ grads.T, orders) @ grads, reference(grads, orders))


def test_seeded_generator_is_reproducible():
    grads = random_grads(4, 6, seed=3)
    first = aggregate("pcgrad", grads, generator=torch.Generator().manual_seed(7))
    second = aggregate("pcgrad", grads, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, second)
