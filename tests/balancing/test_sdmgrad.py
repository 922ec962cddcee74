"""SDMGrad (Xiao et al. 2023): the projected step on lambda and the update, by hand and at the optimum."""
from __future__ import annotations

import io

import pytest
import torch

from taskloom.balancing.sdmgrad import SDMGrad, sdmgrad, sdmgrad_weights

G = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)


def test_one_step_by_hand():
    # Gram diag(1, 4) / its mean diagonal 2.5 = diag(0.4, 1.6); pull = lmbda Gn 1 / 2 = 0.5 (0.2, 0.8);
    # gradient at (0.5, 0.5) = (0.2, 0.8) + (0.1, 0.4) = (0.3, 1.2); l - 0.5 grad = (0.35, -0.1), projected
    # (+0.375 each) = (0.725, 0.275); weights (l + 0.25) / 1.5 = (0.65, 0.35); d = (0.65, 0.7).
    balancer = SDMGrad(["a", "b"], lmbda=0.5, gamma=0.5, iterations=1)
    direction, weights = balancer.combine(G, ["a", "b"])
    torch.testing.assert_close(balancer.lambdas, torch.tensor([0.725, 0.275], dtype=torch.float64))
    torch.testing.assert_close(weights, torch.tensor([0.65, 0.35], dtype=torch.float64))
    torch.testing.assert_close(direction, torch.tensor([0.65, 0.7], dtype=torch.float64))


def test_converges_to_the_minimizer_computed_by_hand():
    # min over l1 of 1/2 ((l1 + a/2)^2 + (2 - 2 l1 + a)^2): 5 l1 + a/2 - 4 - 2a = 0, l1 = (4 + 1.5 a) / 5;
    # a = 0.5: l = (0.95, 0.05), d = (G^T l + a g0) / (1 + a) = ((0.95 + 0.25), (0.1 + 0.5)) / 1.5.
    lam, weights = sdmgrad_weights(G @ G.T, torch.tensor([0.5, 0.5], dtype=torch.float64), lmbda=0.5,
                                   gamma=0.5, iterations=300)
    torch.testing.assert_close(lam, torch.tensor([0.95, 0.05], dtype=torch.float64))
    torch.testing.assert_close(weights @ G, torch.tensor([0.8, 0.4], dtype=torch.float64))


def test_lmbda_zero_is_mgda_and_a_large_lmbda_the_mean_gradient():
    # MGDA's min-norm point of the hull of (1, 0) and (0, 2): weights (4/5, 1/5), d = (0.8, 0.4).
    direction = sdmgrad(G, lmbda=0.0, gamma=0.5, iterations=300)
    torch.testing.assert_close(direction, torch.tensor([0.8, 0.4], dtype=torch.float64))
    direction = sdmgrad(G, lmbda=1e6, gamma=0.5, iterations=5)
    torch.testing.assert_close(direction, G.mean(dim=0), atol=1e-5, rtol=0)


def test_warm_start_and_missing_labels():
    balancer = SDMGrad(["a", "b", "c"], lmbda=0.5, gamma=0.5, iterations=1)
    grads = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    balancer.combine(grads, ["a", "b", "c"])
    after_one = balancer.lambdas.clone()
    balancer.combine(grads[[0, 1]], ["a", "b"])  # c unlabelled: it keeps its lambda, a and b keep their mass
    assert float(balancer.lambdas[2]) == pytest.approx(float(after_one[2]))
    assert float(balancer.lambdas[:2].sum()) == pytest.approx(float(after_one[:2].sum()))
    # a and b step from their renormalized warm start, as a fresh two-task balancer started there would
    start = after_one[:2] / after_one[:2].sum()
    expected, _ = sdmgrad_weights(grads[[0, 1]] @ grads[[0, 1]].T, start, lmbda=0.5, gamma=0.5, iterations=1)
    torch.testing.assert_close(balancer.lambdas[:2], expected * after_one[:2].sum())


def test_state_round_trips_through_a_weights_only_checkpoint():
    balancer = SDMGrad(["a", "b"], iterations=2)
    balancer.combine(G, ["a", "b"])
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)
    buffer.seek(0)
    resumed = SDMGrad(["a", "b"], iterations=2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    other = torch.tensor([[1.0, 1.0], [-1.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(resumed.combine(other, ["a", "b"])[0], balancer.combine(other, ["a", "b"])[0])


@pytest.mark.parametrize("options,field", [({"lmbda": -0.1}, "lmbda"), ({"gamma": 0.0}, "gamma"),
                                           ({"iterations": 0}, "iterations")])
def test_bad_options_are_refused_naming_them(options, field):
    with pytest.raises(ValueError, match=rf"balancing\.options\.{field}"):
        SDMGrad(["a", "b"], **options)
