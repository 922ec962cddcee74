"""FairGrad (Ban & Ji 2024): the weights solve the alpha-fair optimality condition G w = w^(-1/alpha)."""
from __future__ import annotations

import io
import math

import pytest
import torch

from balancing._gradient_helpers import TASKS, losses_from, make_data, make_model, random_grads
from taskloom.balancing import aggregate, build_balancer
from taskloom.balancing.fairgrad import fairgrad_weights
from taskloom.balancing.nashmtl import nash_weights

F64 = torch.float64


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_weights_satisfy_the_alpha_fair_optimality_condition(alpha, seed):
    grads = random_grads(4, 12, seed=seed) * torch.tensor([[1.0], [10.0], [0.1], [3.0]], dtype=F64)
    gram = grads @ grads.T
    w = fairgrad_weights(gram, alpha)
    assert w.min() > 0
    torch.testing.assert_close(gram @ w, w.pow(-1 / alpha), rtol=1e-6, atol=0)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 4.0])
def test_orthogonal_gradients_have_the_closed_form(alpha):
    # G = diag(n^2): n_i^2 w_i = w_i^(-1/alpha), so w_i = n_i^(-2 alpha / (1 + alpha))
    norms = [1.0, 2.0, 0.5]
    gram = torch.diag(torch.tensor([n * n for n in norms], dtype=F64))
    expected = torch.tensor([n ** (-2 * alpha / (1 + alpha)) for n in norms], dtype=F64)
    torch.testing.assert_close(fairgrad_weights(gram, alpha), expected, rtol=1e-9, atol=0)


def test_hand_solved_symmetric_pair():
    # G = [[2, 1], [1, 2]]: by symmetry w_1 = w_2 = w with 3 w = w^(-1/alpha)
    gram = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=F64)
    torch.testing.assert_close(fairgrad_weights(gram, 1.0), torch.full((2,), 1 / math.sqrt(3), dtype=F64))
    torch.testing.assert_close(fairgrad_weights(gram, 3.0), torch.full((2,), 3 ** -0.75, dtype=F64))


def test_alpha_one_is_nash_bargaining():
    grads = random_grads(5, 9, seed=3)
    gram = grads @ grads.T
    torch.testing.assert_close(fairgrad_weights(gram, 1.0), nash_weights(gram), rtol=1e-8, atol=0)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_scaling_the_gramian_scales_the_weights_by_the_derived_power(alpha):
    # (s G)(c w) = (c w)^(-1/alpha) holds for c = s^(-alpha / (1 + alpha))
    grads = random_grads(3, 7, seed=5)
    gram = grads @ grads.T
    torch.testing.assert_close(fairgrad_weights(100.0 * gram, alpha),
                               100.0 ** (-alpha / (1 + alpha)) * fairgrad_weights(gram, alpha), rtol=1e-8, atol=0)


def test_larger_alpha_evens_out_the_tasks_improvements():
    # the improvement of task i is g_i . d = (G w)_i; as alpha -> infinity (max-min fairness) they become equal
    # wherever equal improvements are reachable with w > 0, i.e. G^-1 1 > 0 (checked on this hand-made matrix)
    grads = torch.tensor([[2.0, 0.5, 0.0], [0.3, 1.0, 0.0], [0.0, 0.2, 0.5]], dtype=F64)
    gram = grads @ grads.T
    assert (torch.linalg.solve(gram, torch.ones(3, dtype=F64)) > 0).all()
    spreads = []
    for alpha in (0.5, 1.0, 4.0, 32.0):
        improvements = gram @ fairgrad_weights(gram, alpha)
        assert improvements.min() > 0
        spreads.append(float(improvements.max() / improvements.min()))
    assert spreads == sorted(spreads, reverse=True) and spreads[-1] < 1.2 < 4 < spreads[0]


def test_the_update_is_the_weighted_sum_of_gradients():
    grads = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=F64))
    # alpha = 1: w = 1 / n, so each coordinate of the update is n_i / n_i = 1
    torch.testing.assert_close(aggregate("fairgrad", grads, alpha=1.0), torch.ones(3, dtype=F64))


def test_a_task_without_gradient_gets_a_finite_weight_and_leaves_the_others_exact():
    grads = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=F64)
    w = fairgrad_weights(grads @ grads.T, 1.0)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w[[0, 2]], torch.tensor([1.0, 0.5], dtype=F64), rtol=1e-6, atol=0)
    assert torch.equal(fairgrad_weights(torch.zeros(2, 2, dtype=F64)), torch.ones(2, dtype=F64))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_exactly_opposite_gradients_give_a_finite_zero_update(alpha):
    # no w > 0 solves G w = w^(-1/alpha) here (G w sums to zero): equal weights, no move
    grads = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    w = fairgrad_weights(grads @ grads.T, alpha)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w[0], w[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(aggregate("fairgrad", grads, alpha=alpha), torch.zeros(2, dtype=F64), rtol=0,
                               atol=1e-12 * float(w.max()))


@pytest.mark.parametrize("alpha", [0, -1.0, float("inf"), float("nan"), True, "1"])
def test_alpha_must_be_a_positive_number(alpha):
    with pytest.raises(ValueError, match=r"balancing\.options\.alpha of fairgrad"):
        build_balancer("fairgrad", TASKS, alpha=alpha)


@pytest.mark.parametrize("mode", ["parameters", "representation"])
def test_a_batch_missing_a_task_weighs_only_the_labelled_ones(mode):
    model = make_model()
    balancer = build_balancer("fairgrad", TASKS, mode=mode, alpha=2.0)
    x, targets = make_data()
    del targets["b"]
    balancer.backward(losses_from(balancer.outputs(model, x), targets), model)
    assert set(balancer.last_weights()) == {"a", "c"}
    assert all(p.grad is None for p in model.task_parameters("b"))
    assert all(p.grad is not None and p.grad.any() for p in model.shared_parameters())


def test_the_balancer_has_no_state_beyond_its_options_and_loads_weights_only():
    balancer = build_balancer("fairgrad", TASKS, task_chunk=2)
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == {}
