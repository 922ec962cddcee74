"""Dynamic weight average (Liu et al. 2019): weights from two previous epochs' losses, by hand."""
import pytest
import torch

from taskloom.balancing.dwa import DynamicWeightAverage

try:
    from . import _loss_helpers as helpers
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import _loss_helpers as helpers


def weights_of(balancer, names):
    return balancer.weights({name: torch.tensor(1.0) for name in names})


def test_first_two_epochs_use_weight_one():
    balancer = DynamicWeightAverage(["a", "b"], temperature=2.0)
    assert {k: float(v) for k, v in weights_of(balancer, "ab").items()} == {"a": 1.0, "b": 1.0}
    balancer.on_epoch_end({"a": 1.0, "b": 2.0})
    assert {k: float(v) for k, v in weights_of(balancer, "ab").items()} == {"a": 1.0, "b": 1.0}


def test_weights_from_two_epochs_by_hand():
    # r = (0.5 / 1.0, 2.0 / 2.0) = (0.5, 1.0); w = 2 exp(r/2) / (exp(0.25) + exp(0.5)).
    balancer = DynamicWeightAverage(["a", "b"], temperature=2.0)
    balancer.on_epoch_end({"a": 1.0, "b": 2.0})
    balancer.on_epoch_end({"a": 0.5, "b": 2.0})
    weights = weights_of(balancer, "ab")
    assert float(weights["a"]) == pytest.approx(0.8756470, abs=1e-6)
    assert float(weights["b"]) == pytest.approx(1.1243530, abs=1e-6)
    # a third epoch uses only the last two: r = (0.25 / 0.5, 1.0 / 2.0), equal ratios, equal weights.
    balancer.on_epoch_end({"a": 0.25, "b": 1.0})
    weights = weights_of(balancer, "ab")
    assert float(weights["a"]) == pytest.approx(1.0) and float(weights["b"]) == pytest.approx(1.0)


def test_three_tasks_temperature_one_sum_to_k():
    # r = (2, 1, 0.5), T = 1: w = 3 softmax(r) = (1.8855952, 0.6936717, 0.4207331).
    balancer = DynamicWeightAverage(["a", "b", "c"], temperature=1.0)
    balancer.on_epoch_end({"a": 1.0, "b": 1.0, "c": 4.0})
    balancer.on_epoch_end({"a": 2.0, "b": 1.0, "c": 2.0})
    weights = weights_of(balancer, "abc")
    assert [float(weights[n]) for n in "abc"] == pytest.approx([1.8855952, 0.6936717, 0.4207331], abs=1e-6)
    assert sum(float(w) for w in weights.values()) == pytest.approx(3.0)


def test_task_missing_from_an_epoch_keeps_its_history():
    balancer = DynamicWeightAverage(["a", "b"], temperature=2.0)
    balancer.on_epoch_end({"a": 1.0, "b": 2.0})
    balancer.on_epoch_end({"a": 0.5, "b": 2.0})
    balancer.on_epoch_end({"b": 2.0})  # "a" unlabelled all epoch: its ratio stays 0.5
    weights = weights_of(balancer, "ab")
    assert float(weights["a"]) == pytest.approx(0.8756470, abs=1e-6)
    assert list(weights_of(balancer, "b")) == ["b"]


def test_bad_temperature_is_refused():
    with pytest.raises(ValueError, match="temperature"):
        DynamicWeightAverage(["a"], temperature=0.0)


def test_trains_two_tasks_to_lower_loss():
    helpers.check_trains_to_lower_loss("dwa")


def test_state_round_trip_and_absent_task():
    helpers.check_state_round_trip("dwa")
    helpers.check_absent_task("dwa")
