"""GradDrop (Chen et al. 2020): the sign-purity masking rule, by hand on fixed uniform draws.

In representation mode the purity of each unit comes from the batch-summed sign(A) * dL_i/dA
and one mask per unit holds for the whole batch (the paper's batch reduction).
"""
from __future__ import annotations

import torch
from balancing._gradient_helpers import TASKS, losses_from, make_data, make_model

from taskloom.balancing import BALANCERS, aggregate
from taskloom.balancing.graddrop import graddrop
from taskloom.balancing.jacobian import head_gradients

GRADS = torch.tensor([[1.0, -2.0, 3.0], [1.0, 2.0, -1.0]], dtype=torch.float64)
UNIFORM = torch.tensor([0.3, 0.6, 0.8], dtype=torch.float64)

# two samples, two units: A and the per-task gradients dL_i/dA
ACTIVATIONS = torch.tensor([[1.0, -2.0], [-3.0, 4.0]], dtype=torch.float64)
TASK_1 = torch.tensor([[0.5, 1.0], [0.25, -2.0]], dtype=torch.float64)
TASK_2 = torch.tensor([[-1.0, 0.5], [1.0, 1.0]], dtype=torch.float64)


def test_mask_rule_by_hand():
    # purity P = (1 + sum / sum|.|) / 2 = [1, 0.5, 0.75]; P > U keeps positives, P < U keeps negatives
    torch.testing.assert_close(aggregate("graddrop", GRADS, uniform=UNIFORM),
                               torch.tensor([2.0, -2.0, -1.0], dtype=torch.float64))


def test_leak_keeps_a_fraction_of_the_dropped_gradient():
    torch.testing.assert_close(aggregate("graddrop", GRADS, uniform=UNIFORM, leak=0.5),
                               torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(aggregate("graddrop", GRADS, leak=1.0), GRADS.sum(dim=0))


def test_agreeing_signs_are_always_kept_and_the_draw_is_seeded():
    grads = torch.tensor([[1.0, -1.0], [2.0, -3.0]], dtype=torch.float64)
    torch.testing.assert_close(aggregate("graddrop", grads), grads.sum(dim=0))
    for extreme in (0.0, 1.0 - 2**-24):  # the ends of U's range keep them too
        torch.testing.assert_close(aggregate("graddrop", grads, uniform=torch.full((2,), extreme)), grads.sum(dim=0))
    first = aggregate("graddrop", GRADS, generator=torch.Generator().manual_seed(1))
    second = aggregate("graddrop", GRADS, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, second)


def test_representation_mode_masks_units_by_batch_summed_signed_gradients_by_hand():
    grads = torch.stack([TASK_1.reshape(-1), TASK_2.reshape(-1)])
    # s_i = sum_b sign(A) * g_i: s_1 = [0.5 - 0.25, -1 - 2] = [0.25, -3], s_2 = [-1 - 1, -0.5 + 1] = [-2, 0.5]
    # P = (1 + (s_1 + s_2) / (|s_1| + |s_2|)) / 2 = [(1 - 1.75 / 2.25) / 2, (1 - 2.5 / 3.5) / 2] = [1/9, 1/7]
    uniform = torch.tensor([0.05, 0.1], dtype=torch.float64)
    # both units P > U: keep the tasks with s_i > 0, for every sample: unit 0 from task 1, unit 1 from task 2
    expected = torch.tensor([[0.5, 0.5], [0.25, 1.0]], dtype=torch.float64)
    got = graddrop(grads, uniform=uniform, representation=ACTIVATIONS)
    torch.testing.assert_close(got, expected.reshape(-1))
    # U above P on unit 0 only: there the negative side (task 2) is kept, for both samples
    got = graddrop(grads, uniform=torch.tensor([0.5, 0.1], dtype=torch.float64), representation=ACTIVATIONS)
    torch.testing.assert_close(got, torch.tensor([[-1.0, 0.5], [1.0, 1.0]], dtype=torch.float64).reshape(-1))
    # leak 0.5: half of everything plus half of the kept part
    got = graddrop(grads, uniform=uniform, leak=0.5, representation=ACTIVATIONS)
    torch.testing.assert_close(got, (0.5 * (TASK_1 + TASK_2) + 0.5 * expected).reshape(-1))


def test_the_balancer_in_representation_mode_uses_the_representation_and_its_own_seeded_draw():
    model = make_model()
    x, targets = make_data()
    balancer = BALANCERS.get("graddrop")(TASKS, mode="representation", seed=3)
    z = model.representation(x)
    losses = losses_from(model.heads_forward(z), targets)
    rep_grads, _ = head_gradients([losses[n] for n in TASKS], z, [[] for _ in TASKS])
    direction = graddrop(rep_grads, torch.Generator().manual_seed(3), representation=z.detach())
    expected = torch.autograd.grad(z, model.shared_parameters(), grad_outputs=direction.view_as(z), retain_graph=True)
    balancer.backward(losses, model, representation=z)
    for parameter, gradient in zip(model.shared_parameters(), expected):
        torch.testing.assert_close(parameter.grad, gradient)
    assert balancer.random.on(z.device).device == z.device
