"""Uncertainty weighting (Kendall et al. 2018): the learned log-variances reach the closed-form optimum."""
import math

import pytest
import torch

from taskloom.balancing.uncertainty import UncertaintyWeighting

try:
    from . import _loss_helpers as helpers
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import _loss_helpers as helpers


def test_log_variances_reach_log_of_fixed_losses():
    # exp(-s) L + s has its minimum at s = log L (derivative -L exp(-s) + 1 = 0), weight 1/L.
    values = {"a": 0.5, "b": 2.0, "c": 8.0}
    balancer = UncertaintyWeighting(list(values))
    optimizer = torch.optim.Adam(balancer.parameters(), lr=0.05)
    losses = {name: torch.tensor(value) for name, value in values.items()}
    for _ in range(1500):
        optimizer.zero_grad()
        balancer.combine(losses).backward()
        optimizer.step()
    expected = torch.log(torch.tensor(list(values.values())))
    torch.testing.assert_close(balancer.log_variance.detach(), expected, atol=1e-3, rtol=0)
    weights = balancer.last_weights()
    for name, value in values.items():
        assert weights[name] == pytest.approx(1 / value, rel=2e-3)


def test_objective_and_its_gradient_on_a_hand_example():
    balancer = UncertaintyWeighting(["a", "b"], init_log_variance=0.0)
    with torch.no_grad():
        balancer.log_variance.copy_(torch.tensor([0.0, math.log(2.0)]))
    losses = {"a": torch.tensor(3.0, requires_grad=True), "b": torch.tensor(4.0, requires_grad=True)}
    total = balancer.combine(losses)
    assert float(total.detach()) == pytest.approx(3.0 + 0.0 + 4.0 / 2.0 + math.log(2.0))
    total.backward()
    assert float(losses["a"].grad) == pytest.approx(1.0)
    assert float(losses["b"].grad) == pytest.approx(0.5)
    torch.testing.assert_close(balancer.log_variance.grad, torch.tensor([1 - 3.0, 1 - 2.0]))


def test_absent_task_gets_no_gradient_on_its_log_variance():
    balancer = UncertaintyWeighting(["a", "b"])
    balancer.combine({"b": torch.tensor(2.0)}).backward()
    assert balancer.log_variance.grad[0] == 0
    assert balancer.log_variance.grad[1] == pytest.approx(1 - 2.0)


def test_unknown_task_is_named():
    with pytest.raises(KeyError, match="'z'"):
        UncertaintyWeighting(["a"]).combine({"z": torch.tensor(1.0)})


def test_trains_two_tasks_to_lower_loss():
    helpers.check_trains_to_lower_loss("uncertainty")


def test_state_round_trip_and_absent_task():
    helpers.check_state_round_trip("uncertainty")
    helpers.check_absent_task("uncertainty")
