"""Random loss weighting (Lin et al. 2022): fresh simplex weights each step, drawn as the paper says."""
import pytest
import torch

from taskloom.balancing.rlw import RandomLossWeighting

try:
    from . import _loss_helpers as helpers
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import _loss_helpers as helpers

NAMES = ["a", "b", "c"]


def losses_for(names, values=(1.0, 2.0, 3.0)):
    return {name: torch.tensor(value, requires_grad=True) for name, value in zip(names, values)}


def test_weights_are_softmax_of_standard_normal_draws():
    balancer = RandomLossWeighting(NAMES, seed=7)
    reference = torch.Generator().manual_seed(7)
    for _ in range(3):
        losses = losses_for(NAMES)
        total = balancer.combine(losses)
        expected = torch.softmax(torch.randn(3, generator=reference), dim=0)
        total.backward()
        got = torch.stack([losses[n].grad for n in NAMES])
        torch.testing.assert_close(got, expected)
        assert float(total.detach()) == pytest.approx(float((expected * torch.tensor([1.0, 2.0, 3.0])).sum()))


@pytest.mark.parametrize("distribution", ["normal", "uniform", "dirichlet"])
def test_draws_lie_on_the_simplex_with_mean_one_over_k(distribution):
    balancer = RandomLossWeighting(NAMES, distribution=distribution, seed=0)
    draws = torch.stack([balancer.sample(3) for _ in range(4000)])
    assert (draws > 0).all()
    torch.testing.assert_close(draws.sum(1), torch.ones(4000))
    torch.testing.assert_close(draws.mean(0), torch.full((3,), 1 / 3), atol=0.01, rtol=0)
    assert draws.std(0).min() > 0.05


def test_dirichlet_one_is_uniform_on_the_simplex():
    # For Dirichlet(1, 1, 1) each coordinate is Beta(1, 2): P(w_1 < 0.5) = 1 - 0.5^2 = 0.75.
    balancer = RandomLossWeighting(NAMES, distribution="dirichlet", seed=1)
    draws = torch.stack([balancer.sample(3) for _ in range(4000)])
    assert float((draws[:, 0] < 0.5).float().mean()) == pytest.approx(0.75, abs=0.02)


def test_weights_change_every_step_and_absent_task_is_not_drawn():
    balancer = RandomLossWeighting(NAMES, seed=3)
    first = balancer.weights(losses_for(NAMES))
    second = balancer.weights(losses_for(NAMES))
    assert any(float(first[n]) != float(second[n]) for n in NAMES)
    partial = balancer.weights(losses_for(["a", "c"]))
    assert list(partial) == ["a", "c"]
    assert float(sum(partial.values())) == pytest.approx(1.0)


def test_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match="distribution"):
        RandomLossWeighting(NAMES, distribution="bernoulli")


def test_trains_two_tasks_to_lower_loss():
    helpers.check_trains_to_lower_loss("rlw")


def test_state_round_trip_and_absent_task():
    helpers.check_state_round_trip("rlw")
    helpers.check_absent_task("rlw")
