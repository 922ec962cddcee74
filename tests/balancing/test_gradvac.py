"""GradVac (Wang et al. 2021): the paper's update rule and EMA targets, step by step on hand-made vectors."""
from __future__ import annotations

import math

import torch

from taskloom.balancing import aggregate
from taskloom.balancing.gradvac import GradVacState, gradvac_coefficients
from taskloom.balancing.pcgrad import projection_orders


def test_first_step_with_zero_targets_by_hand():
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    state = GradVacState()
    beta = 0.1
    direction = aggregate("gradvac", grads, state=state, beta=beta, shuffle=False)
    # cos = -1/sqrt(2) < 0 = target: g1' = g1 + 0.5 g2 = [0.5, 0.5], g2' = g2 + g1 = [0, 1]
    torch.testing.assert_close(direction, torch.tensor([0.5, 1.5], dtype=torch.float64))
    phi = -1 / math.sqrt(2)
    expected = torch.tensor([[0.0, beta * phi], [beta * phi, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(state.targets, expected)


def test_adjusted_cosine_reaches_the_target_and_above_target_is_untouched():
    grads = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([[0.0, 0.5], [-0.5, 0.0]], dtype=torch.float64)
    coef, new_targets = gradvac_coefficients(grads @ grads.T, targets, projection_orders(2, shuffle=False), 0.25)
    adjusted = coef @ grads
    cosine = adjusted[0] @ grads[1] / (adjusted[0].norm() * grads[1].norm())
    torch.testing.assert_close(cosine, torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(adjusted[1], grads[1])  # cos 0 is above the target -0.5
    torch.testing.assert_close(new_targets, torch.tensor([[0.0, 0.375], [-0.375, 0.0]], dtype=torch.float64))


def test_state_carries_between_steps():
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    state = GradVacState()
    aggregate("gradvac", grads, state=state, beta=0.5, shuffle=False)
    first = state.targets.clone()
    aggregate("gradvac", grads, state=state, beta=0.5, shuffle=False)
    phi = -1 / math.sqrt(2)
    torch.testing.assert_close(state.targets[0, 1], 0.5 * first[0, 1] + 0.5 * phi)


def reference(grads: torch.Tensor, targets: torch.Tensor, orders: torch.Tensor, beta: float):
    """The paper's rule on vectors: g_i' gains the multiple of g_j that lifts cos(g_i', g_j) to its target."""
    adjusted, new_targets = [], targets.clone()
    for i in range(len(grads)):
        g = grads[i].clone()
        for j in orders[i].tolist():
            phi = float(g @ grads[j] / (g.norm() * grads[j].norm()))
            target = float(targets[i, j])
            if phi < target:
                g = g + grads[j] * g.norm() * (target * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - target**2)) / (
                    grads[j].norm() * math.sqrt(1 - target**2))
            new_targets[i, j] = (1 - beta) * target + beta * phi
        adjusted.append(g)
    return torch.stack(adjusted), new_targets


def test_matches_the_rule_on_random_matrices():
    for seed in range(4):
        generator = torch.Generator().manual_seed(seed)
        grads = 0.3 * torch.randn(1, 7, generator=generator, dtype=torch.float64) + torch.randn(
            5, 7, generator=generator, dtype=torch.float64)
        targets = 0.8 * torch.rand(5, 5, generator=generator, dtype=torch.float64) - 0.4
        orders = projection_orders(5, torch.Generator().manual_seed(seed))
        coef, new_targets = gradvac_coefficients(grads @ grads.T, targets, orders, 0.3)
        expected, expected_targets = reference(grads, targets, orders, 0.3)
        torch.testing.assert_close(coef @ grads, expected)
        off = ~torch.eye(5, dtype=torch.bool)
        torch.testing.assert_close(new_targets[off], expected_targets[off])
