"""STCH (Lin et al. 2024): weights are the gradient of the smooth Tchebycheff scalarization w.r.t. the losses."""
from __future__ import annotations

import io
import math

import pytest
import torch

from balancing._gradient_helpers import TASKS, losses_from, make_data, make_model
from taskloom.balancing import build_balancer
from taskloom.balancing.stch import stch_value, stch_weights

F64 = torch.float64


def as_tensors(*values):
    return [torch.tensor(v, dtype=F64) for v in values]


def test_weights_by_hand():
    # L = (1, 2), z = 0, mu = 1, lambda = 1: softmax(1, 2) = (1, e) / (1 + e)
    losses, ideal, ones = as_tensors([1.0, 2.0], [0.0, 0.0], [1.0, 1.0])
    e = math.e
    torch.testing.assert_close(stch_weights(losses, ideal, ones, 1.0), torch.tensor([1 / (1 + e), e / (1 + e)],
                                                                                    dtype=F64))
    # with preferences (1, 2) and L = (1, 1): lambda * softmax(1, 2) = (1, 2 e) / (1 + e)
    losses, prefs = as_tensors([1.0, 1.0], [1.0, 2.0])
    torch.testing.assert_close(stch_weights(losses, ideal, prefs, 1.0), torch.tensor([1 / (1 + e), 2 * e / (1 + e)],
                                                                                     dtype=F64))


@pytest.mark.parametrize("mu", [0.1, 1.0, 5.0])
def test_weights_are_the_gradient_of_the_scalarization(mu):
    losses, ideal, prefs = as_tensors([0.7, 2.5, 1.1, 0.2], [0.1, 0.0, 0.5, 0.2], [1.0, 0.5, 2.0, 1.0])
    losses.requires_grad_(True)
    (gradient,) = torch.autograd.grad(stch_value(losses, ideal, prefs, mu), losses)
    torch.testing.assert_close(stch_weights(losses.detach(), ideal, prefs, mu), gradient)


@pytest.mark.parametrize("mu", [0.01, 0.5, 2.0])
def test_value_lies_between_the_tchebycheff_max_and_mu_log_k_above(mu):
    losses, ideal, prefs = as_tensors([0.7, 2.5, 1.1], [0.1, 0.0, 0.5], [1.0, 0.5, 2.0])
    worst = float((prefs * (losses - ideal)).max())  # max(0.6, 1.25, 1.2) = 1.25
    assert worst == pytest.approx(1.25)
    value = float(stch_value(losses, ideal, prefs, mu))
    assert worst <= value <= worst + mu * math.log(3)


def test_small_mu_puts_the_weight_on_the_worst_task():
    losses, ideal, ones = as_tensors([1.0, 1.3, 1.2], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    weights = [stch_weights(losses, ideal, ones, mu) for mu in (1.0, 0.1, 0.001)]
    assert [float(w[1]) for w in weights] == sorted(float(w[1]) for w in weights)
    # at mu = 0.001 the runner-up (0.1 below the worst) keeps about exp(-0.1 / 0.001) of the weight
    assert float(weights[-1][1]) == pytest.approx(1.0)
    assert float(weights[-1][2]) == pytest.approx(math.exp(-100), rel=1e-6)


def test_running_minimum_ideal_step_by_step():
    balancer = build_balancer("stch", ["a", "b"], mu=1.0)
    first = balancer.weights({"a": torch.tensor(2.0), "b": torch.tensor(5.0)})
    assert [float(first[n]) for n in "ab"] == pytest.approx([0.5, 0.5])  # every loss at its minimum: L - z = 0
    second = balancer.weights({"a": torch.tensor(1.0), "b": torch.tensor(6.0)})
    # z = (1, 5): L - z = (0, 1), weights softmax(0, 1) = (1, e) / (1 + e)
    assert [float(second[n]) for n in "ab"] == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)])
    assert balancer.minimum_losses.tolist() == [1.0, 5.0]


def test_zero_ideal_point_uses_the_losses_themselves():
    balancer = build_balancer("stch", ["a", "b"], mu=2.0, ideal="zero")
    weights = balancer.weights({"a": torch.tensor(2.0), "b": torch.tensor(4.0)})
    # softmax((2, 4) / 2) = (1, e) / (1 + e)
    assert [float(weights[n]) for n in "ab"] == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)])


def test_the_update_is_the_gradient_of_the_scalarized_loss():
    x, targets = make_data()
    model, reference = make_model(), make_model()
    balancer = build_balancer("stch", TASKS, mu=0.5, ideal="zero", preferences={"a": 1.0, "b": 2.0, "c": 0.5})
    balancer.backward(losses_from(model(x), targets), model)
    losses = losses_from(reference(x), targets)
    value = stch_value(torch.stack([losses[n] for n in TASKS]), torch.zeros(3), torch.tensor([1.0, 2.0, 0.5]), 0.5)
    value.backward()
    for got, expected in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got.grad, expected.grad)


def test_a_batch_missing_a_task_leaves_it_out_and_keeps_its_minimum():
    balancer = build_balancer("stch", TASKS)
    balancer.weights({"a": torch.tensor(1.0), "b": torch.tensor(2.0), "c": torch.tensor(3.0)})
    weights = balancer.weights({"a": torch.tensor(2.0), "c": torch.tensor(3.0)})
    # z = (1, 2, 3): L - z over a, c = (1, 0)
    assert set(weights) == {"a", "c"}
    assert float(weights["a"]) == pytest.approx(math.e / (1 + math.e))
    assert balancer.minimum_losses.tolist() == [1.0, 2.0, 3.0]


def test_state_loads_weights_only_and_resumes_the_minima():
    balancer = build_balancer("stch", TASKS)
    balancer.weights({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)
    buffer.seek(0)
    resumed = build_balancer("stch", TASKS)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.minimum_losses.tolist() == [1.0, 2.0, math.inf]


@pytest.mark.parametrize("options,field", [
    ({"mu": 0.0}, "mu"), ({"mu": float("inf")}, "mu"), ({"ideal": "nadir"}, "ideal"),
    ({"preferences": {"a": 1.0, "b": 1.0}}, "preferences"),
    ({"preferences": {"a": 1, "b": 1, "c": -1}}, "preferences.c"),
])
def test_bad_options_are_refused_naming_the_field(options, field):
    with pytest.raises(ValueError, match=rf"balancing\.options\.{field}"):
        build_balancer("stch", TASKS, **options)
