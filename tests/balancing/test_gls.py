"""Geometric loss strategy (Chennupati et al. 2019): the geometric mean of losses, checked by hand."""
import pytest
import torch

from taskloom.balancing.gls import GeometricLossStrategy

try:
    from . import _loss_helpers as helpers
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import _loss_helpers as helpers


def test_objective_and_gradient_by_hand():
    # (1 * 4 * 16)^(1/3) = 4; d/dL_k = 4 / (3 L_k) = 4/3, 1/3, 1/12.
    balancer = GeometricLossStrategy(["a", "b", "c"])
    losses = {n: torch.tensor(v, requires_grad=True) for n, v in zip("abc", (1.0, 4.0, 16.0))}
    total = balancer.combine(losses)
    assert float(total.detach()) == pytest.approx(4.0)
    total.backward()
    expected = {"a": 4 / 3, "b": 1 / 3, "c": 1 / 12}
    for name, value in expected.items():
        assert float(losses[name].grad) == pytest.approx(value)
        assert balancer.last_weights()[name] == pytest.approx(value)


def test_scaling_one_loss_scales_the_objective_only():
    balancer = GeometricLossStrategy(["a", "b"])
    base = float(balancer.combine({"a": torch.tensor(2.0), "b": torch.tensor(8.0)}))
    scaled = float(balancer.combine({"a": torch.tensor(200.0), "b": torch.tensor(8.0)}))
    assert base == pytest.approx(4.0)
    assert scaled == pytest.approx(base * 100 ** 0.5)


def test_absent_task_leaves_the_product():
    balancer = GeometricLossStrategy(["a", "b"])
    assert float(balancer.combine({"b": torch.tensor(9.0)})) == pytest.approx(9.0)


def test_trains_two_tasks_to_lower_loss():
    helpers.check_trains_to_lower_loss("gls")


def test_state_round_trip_and_absent_task():
    helpers.check_state_round_trip("gls")
    helpers.check_absent_task("gls")
