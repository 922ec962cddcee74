"""FAMO (Liu et al. 2023): the update direction and the logit update, step by step by hand."""

import pytest
import torch
from torch import nn

from taskloom.balancing.famo import FAMO

try:
    from . import _loss_helpers as helpers
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import _loss_helpers as helpers


def quadratic_losses(theta):
    return {"a": theta[0] ** 2, "b": theta[1] ** 2}


def test_update_direction_by_hand():
    # z = (1/2, 1/2), L = (1, 4): z/L = (0.5, 0.125), c = 1/0.625 = 1.6, weights c z / L = (0.8, 0.2).
    balancer = FAMO(["a", "b"], eps=0.0)
    theta = nn.Parameter(torch.tensor([1.0, 2.0]))
    balancer.backward(quadratic_losses(theta), model=None)
    torch.testing.assert_close(theta.grad, torch.tensor([0.8 * 2.0, 0.2 * 4.0]))
    assert balancer.last_weights() == pytest.approx({"a": 0.8, "b": 0.2})


def test_logit_update_by_hand_with_sgd():
    # delta = (log 1 - log 0.5, log 4 - log 3) = (0.693147, 0.287682); z.delta = 0.490415;
    # J^T delta = z (delta - z.delta) = (0.101366, -0.101366); xi = -0.5 * that (decay on xi = 0 adds 0).
    balancer = FAMO(["a", "b"], lr=0.5, decay=0.1, optimizer="sgd", eps=0.0)
    balancer.backward({"a": torch.tensor(1.0, requires_grad=True), "b": torch.tensor(4.0, requires_grad=True)}, None)
    balancer.post_step({"a": torch.tensor(0.5), "b": torch.tensor(3.0)})
    torch.testing.assert_close(balancer.logits, torch.tensor([-0.0506831, 0.0506831]))
    # the task whose loss fell least (b) now weighs more: z_b = sigmoid(0.101366) = 0.525320.
    assert float(torch.softmax(balancer.logits, 0)[1]) == pytest.approx(0.5253199, abs=1e-6)
    # with no change in the losses only the decay acts: xi <- xi (1 - lr * decay).
    before = balancer.logits.clone()
    balancer.backward({"a": torch.tensor(2.0, requires_grad=True), "b": torch.tensor(2.0, requires_grad=True)}, None)
    balancer.post_step({"a": torch.tensor(2.0), "b": torch.tensor(2.0)})
    torch.testing.assert_close(balancer.logits, before * (1 - 0.5 * 0.1))


def test_first_adam_step_moves_each_logit_by_lr():
    # Adam's first step is lr * g / |g| (bias-corrected moments), opposite to the sign of J^T delta.
    balancer = FAMO(["a", "b"], lr=0.025, decay=0.0, eps=0.0)
    balancer.backward({"a": torch.tensor(1.0, requires_grad=True), "b": torch.tensor(4.0, requires_grad=True)}, None)
    balancer.post_step({"a": torch.tensor(0.5), "b": torch.tensor(3.0)})
    torch.testing.assert_close(balancer.logits, torch.tensor([-0.025, 0.025]), atol=1e-6, rtol=0)


def test_absent_task_keeps_its_logit_and_adam_state():
    balancer = FAMO(["a", "b", "c"], lr=0.1, eps=0.0)
    balancer.backward({n: torch.tensor(v, requires_grad=True) for n, v in zip("abc", (1.0, 2.0, 3.0))}, None)
    balancer.post_step({"a": torch.tensor(0.5), "b": torch.tensor(1.9), "c": torch.tensor(2.0)})
    saved = {k: v.clone() for k, v in balancer.state_dict().items()}
    balancer.backward({"a": torch.tensor(1.0, requires_grad=True), "b": torch.tensor(2.0, requires_grad=True)}, None)
    weights = balancer.last_weights()
    assert sum(weights.values()) == pytest.approx(1.0) and list(weights) == ["a", "b"]
    balancer.post_step({"a": torch.tensor(0.9), "b": torch.tensor(1.0)})
    state = balancer.state_dict()
    for key in ("logits", "adam_exp_avg", "adam_exp_avg_sq", "adam_steps"):
        assert state[key][2] == saved[key][2], key
        assert state[key][0] != saved[key][0], key


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="optimizer"):
        FAMO(["a"], optimizer="rmsprop")


def test_trains_two_tasks_to_lower_loss():
    helpers.check_trains_to_lower_loss("famo")


def test_state_round_trip_and_absent_task():
    helpers.check_state_round_trip("famo")
    helpers.check_absent_task("famo")
