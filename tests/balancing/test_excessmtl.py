"""ExcessMTL (He et al. 2024): exponentiated-gradient weights on Adagrad-estimated excess risks, by hand."""
from __future__ import annotations

import io
import math

import pytest
import torch

from balancing._gradient_helpers import TASKS, losses_from, make_data, make_model
from taskloom.balancing import aggregate, build_balancer
from taskloom.balancing.excessmtl import ExcessMTLState, excess_risks, multiplicative_update

F64 = torch.float64
G1 = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=F64)
G2 = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=F64)


def test_excess_risk_estimates_by_hand():
    # step 1: squares = g^2, so r_i = sum g^2 / |g| / 2 = ||g_i||_1 / 2 = (1.5, 1.5)
    torch.testing.assert_close(excess_risks(G1, G1 * G1, eps=0.0), torch.tensor([1.5, 1.5], dtype=F64))
    # step 2: squares = [[2, 4], [9, 16]]: r = (1 / sqrt 2 / 2, 16 / 4 / 2)
    squares = G1 * G1 + G2 * G2
    torch.testing.assert_close(excess_risks(G2, squares, eps=0.0),
                               torch.tensor([0.5 / math.sqrt(2), 2.0], dtype=F64))


def test_multiplicative_weights_step_by_hand():
    # w = (1/2, 1/2), r = (1, 3), eta = 1/2: w ~ (e^0.5, e^1.5), i.e. (1, e) / (1 + e)
    moved = multiplicative_update(torch.log(torch.tensor([0.5, 0.5], dtype=F64)), torch.tensor([1.0, 3.0], dtype=F64),
                                  0.5)
    torch.testing.assert_close(moved.exp(), torch.tensor([1 / (1 + math.e), math.e / (1 + math.e)], dtype=F64))


def _expected_second_weights(eta: float) -> torch.Tensor:
    """Weights (summing to K = 2) after the two hand-made steps, with estimates relative to the first (1.5, 1.5)."""
    first = [1.0, 1.0]  # every task's first estimate divided by itself
    second = [(0.5 / math.sqrt(2)) / 1.5, 2.0 / 1.5]
    raw = [math.exp(eta * (a + b)) for a, b in zip(first, second)]
    return torch.tensor([2 * r / sum(raw) for r in raw], dtype=F64)


def test_two_steps_of_the_pure_function_by_hand():
    state = ExcessMTLState()
    # step 1: equal relative estimates, so the weights stay equal: the update is g_1 + g_2
    torch.testing.assert_close(aggregate("excessmtl", G1, state=state, eta=0.5, eps=0.0), G1.sum(0))
    weights = _expected_second_weights(0.5)
    torch.testing.assert_close(aggregate("excessmtl", G2, state=state, eta=0.5, eps=0.0), weights @ G2)


def test_the_balancer_gives_the_same_weights_and_the_larger_excess_gains():
    balancer = build_balancer("excessmtl", ["a", "b"], eta=0.5, eps=0.0)
    _, first = balancer.combine(G1, ["a", "b"])
    torch.testing.assert_close(first, torch.ones(2, dtype=F64))
    direction, second = balancer.combine(G2, ["a", "b"])
    torch.testing.assert_close(second, _expected_second_weights(0.5))
    torch.testing.assert_close(direction, second @ G2)
    assert second[1] > 1 > second[0]  # task b's estimate is larger: it gains weight


def test_without_normalization_the_raw_estimates_drive_the_update():
    balancer = build_balancer("excessmtl", ["a", "b"], eta=1.0, eps=0.0, normalize=False)
    balancer.combine(G1, ["a", "b"])  # equal raw estimates (1.5, 1.5): equal weights
    _, weights = balancer.combine(G2, ["a", "b"])
    raw = [math.exp(1.5 + 0.5 / math.sqrt(2)), math.exp(1.5 + 2.0)]
    torch.testing.assert_close(weights, torch.tensor([2 * r / sum(raw) for r in raw], dtype=F64))


def test_a_task_absent_from_a_step_keeps_its_accumulator_and_share():
    balancer = build_balancer("excessmtl", ["a", "b", "c"], eta=0.5, eps=0.0)
    three = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 1.0]], dtype=F64)
    balancer.combine(three, ["a", "b", "c"])  # equal relative estimates: weights stay 1/3 each
    squares_b = balancer.squares[1].clone()
    _, weights = balancer.combine(G2, ["a", "c"])
    # a: squares (2, 4), r = 1 / sqrt 2 / 2 relative to 1.5; c: squares (0, 17), r = 16 / sqrt 17 / 2 relative to 0.5
    rel = [(0.5 / math.sqrt(2)) / 1.5, (8 / math.sqrt(17)) / 0.5]
    raw = [math.exp(0.5 * (1 + r)) for r in rel]
    torch.testing.assert_close(weights, torch.tensor([2 * r / sum(raw) for r in raw], dtype=F64))
    assert torch.equal(balancer.squares[1], squares_b)
    torch.testing.assert_close(balancer.log_weights[1].exp(), torch.tensor(1 / 3, dtype=F64))
    torch.testing.assert_close(balancer.log_weights.exp().sum(), torch.tensor(1.0, dtype=F64))


def test_the_state_loads_weights_only_and_continues():
    balancer = build_balancer("excessmtl", ["a", "b"], eta=0.5)
    balancer.combine(G1, ["a", "b"])
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)
    buffer.seek(0)
    resumed = build_balancer("excessmtl", ["a", "b"], eta=0.5)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(resumed.combine(G2, ["a", "b"])[1], balancer.combine(G2, ["a", "b"])[1])


def test_a_model_step_with_a_missing_label_trains_the_labelled_tasks():
    model, balancer = make_model(), build_balancer("excessmtl", TASKS)
    x, targets = make_data()
    del targets["c"]
    balancer.backward(losses_from(balancer.outputs(model, x), targets), model)
    assert set(balancer.last_weights()) == {"a", "b"}
    assert all(p.grad is None for p in model.task_parameters("c"))
    assert all(p.grad is not None and p.grad.any() for p in model.shared_parameters())


def test_representation_mode_and_task_chunk_are_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"excessmtl .*representation gradients.*balancing\.options\.mode"):
        build_balancer("excessmtl", TASKS, mode="representation")
    with pytest.raises(ValueError, match=r"excessmtl cannot use balancing\.options\.task_chunk"):
        build_balancer("excessmtl", TASKS, task_chunk=1)


@pytest.mark.parametrize("options,field", [({"eta": -0.1}, "eta"), ({"eta": "big"}, "eta"),
                                           ({"normalize": "yes"}, "normalize")])
def test_bad_options_are_refused_naming_the_field(options, field):
    with pytest.raises(ValueError, match=rf"balancing\.options\.{field} of excessmtl"):
        build_balancer("excessmtl", TASKS, **options)
