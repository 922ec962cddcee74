"""DB-MTL (Lin et al. 2023): EMA of log-loss gradients rescaled to the largest norm, step by step."""
from __future__ import annotations

import math

import pytest
import torch

from balancing._gradient_helpers import TASKS, losses_from, make_data, make_model
from taskloom.balancing import BALANCERS, aggregate
from taskloom.balancing.dbmtl import DBMTLState
from taskloom.balancing.jacobian import task_gradients


def test_two_steps_by_hand():
    state = DBMTLState()
    g1 = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    # step 1: beta_1 = 0.5, buffer = 0.5 g1 = [[1.5, 2], [0, 0.5]], norms 2.5 and 0.5, scales 1 and 5
    d1 = aggregate("dbmtl", g1, state=state, beta=0.5, sigma=0.5)
    torch.testing.assert_close(d1, torch.tensor([1.5, 4.5], dtype=torch.float64))
    g2 = torch.tensor([[0.0, 2.0], [1.0, 0.0]], dtype=torch.float64)
    rate = 0.5 / math.sqrt(2)
    buffer = rate * torch.tensor([[1.5, 2.0], [0.0, 0.5]], dtype=torch.float64) + (1 - rate) * g2
    norms = buffer.norm(dim=1)
    expected = (norms.max() / norms) @ buffer
    torch.testing.assert_close(aggregate("dbmtl", g2, state=state, beta=0.5, sigma=0.5), expected)
    assert state.step == 2


def test_balancer_combines_gradients_of_log_losses():
    model = make_model()
    x, targets = make_data()
    losses = losses_from(model(x), targets)
    log_grads = task_gradients([torch.log(losses[n] + 1e-8) for n in TASKS], model.shared_parameters())
    expected = aggregate("dbmtl", log_grads, state=DBMTLState(), beta=0.9, sigma=0.5)
    balancer = BALANCERS.get("dbmtl")(TASKS)
    balancer.backward(losses_from(model(x), targets), model)
    got = torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_representation_mode_is_refused_naming_the_option():
    with pytest.raises(ValueError, match=r"balancing\.options\.mode"):
        BALANCERS.get("dbmtl")(TASKS, mode="representation")


def test_averages_and_step_counts_are_buffers_in_the_state_dict():
    balancer = BALANCERS.get("dbmtl")(["a", "b"], beta=0.5, sigma=0.5)
    g1 = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    balancer.combine(g1, ["a", "b"])
    state = balancer.state_dict()
    torch.testing.assert_close(state["_buffer"], 0.5 * g1)  # beta_1 = 0.5: half the first gradients
    assert state["_steps"].tolist() == [1, 1]
    restored = BALANCERS.get("dbmtl")(["a", "b"], beta=0.5, sigma=0.5)
    restored.load_state_dict(state)
    g2 = torch.tensor([[0.0, 2.0], [1.0, 0.0]], dtype=torch.float64)
    expected, expected_scale = balancer.combine(g2, ["a", "b"])
    got, scale = restored.combine(g2, ["a", "b"])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(scale, expected_scale, rtol=0, atol=0)
    assert restored.state_dict()["_steps"].tolist() == [2, 2]


def test_each_task_counts_its_own_steps_when_absent_from_a_batch():
    balancer = BALANCERS.get("dbmtl")(["a", "b"], beta=0.5, sigma=0.5)
    g1 = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    balancer.combine(g1, ["a", "b"])
    only_b = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    direction, _ = balancer.combine(only_b, ["b"])
    # b's second step: beta_2 = 0.5 / sqrt(2) on b's average [0, 0.5]; a's row is left alone
    rate = 0.5 / math.sqrt(2)
    expected_b = rate * torch.tensor([0.0, 0.5], dtype=torch.float64) + (1 - rate) * only_b[0]
    torch.testing.assert_close(direction, expected_b)  # one task: its own average, scale 1
    torch.testing.assert_close(balancer._buffer[0], 0.5 * g1[0])
    assert balancer._steps.tolist() == [1, 2]
