"""MoCo (Fernando et al. 2023): tracked gradients, projected weights and the update, step by step by hand."""
from __future__ import annotations

import io

import pytest
import torch

from taskloom.balancing.moco import MoCo, moco_step, simplex_step


def test_two_steps_by_hand():
    balancer = MoCo(["a", "b"], beta=0.5, gamma=0.1, rho=0.2)
    # step 1: Y = G (first sight); grad = Y Y^T l + rho l = (0.5, 2) + (0.1, 0.1); l - 0.1 grad = (0.44, 0.29),
    # projected (+0.135 each) = (0.575, 0.425); d = Y^T l = (0.575, 0.85).
    direction, weights = balancer.combine(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), ["a", "b"])
    torch.testing.assert_close(weights, torch.tensor([0.575, 0.425]))
    torch.testing.assert_close(direction, torch.tensor([0.575, 0.85]))
    # step 2: Y = Y - 0.5 (Y - G) = diag(2, 1); grad = (4 * 0.575, 0.425) + 0.2 l = (2.415, 0.51);
    # l - 0.1 grad = (0.3335, 0.374), projected (+0.14625 each) = (0.47975, 0.52025); d = (0.9595, 0.52025).
    direction, weights = balancer.combine(torch.tensor([[3.0, 0.0], [0.0, 0.0]]), ["a", "b"])
    torch.testing.assert_close(balancer.memory, torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(weights, torch.tensor([0.47975, 0.52025]))
    torch.testing.assert_close(direction, torch.tensor([0.9595, 0.52025]))


def test_pure_step_matches_the_balancer_and_leaves_its_inputs():
    tracked, grads, weights = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]]), \
        torch.tensor([0.5, 0.5])
    new_tracked, new_weights, direction = moco_step(tracked, grads, weights, beta=0.25, gamma=0.1)
    torch.testing.assert_close(new_tracked, torch.tensor([[1.5, 0.0], [0.0, 1.5]]))  # Y - 0.25 Y
    torch.testing.assert_close(new_weights, torch.tensor([0.5, 0.5]))  # symmetric: the step is along 1
    torch.testing.assert_close(direction, torch.tensor([0.75, 0.75]))
    torch.testing.assert_close(tracked, torch.tensor([[2.0, 0.0], [0.0, 2.0]]))


def test_a_large_step_clips_a_weight_to_zero():
    # l - 1 * (0.5, 2) = (0, -1.5): its projection onto the simplex is the vertex (1, 0).
    weights = simplex_step(torch.tensor([0.5, 0.5]), None, lambda w: torch.tensor([0.5, 2.0]), 1.0)
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.0]))


def test_weights_stay_on_the_simplex():
    generator = torch.Generator().manual_seed(0)
    balancer = MoCo(["a", "b", "c"], gamma=0.7)
    for _ in range(20):
        grads = torch.randn(3, 6, generator=generator, dtype=torch.float64)
        balancer.combine(grads, ["a", "b", "c"])
        assert bool((balancer.weights >= 0).all())
        assert float(balancer.weights.sum()) == pytest.approx(1.0)


def test_a_task_without_labels_keeps_its_tracked_gradient_and_weight():
    balancer = MoCo(["a", "b", "c"], beta=0.5, gamma=0.1)
    balancer.combine(torch.eye(3), ["a", "b", "c"])
    memory, weights = balancer.memory.clone(), balancer.weights.clone()
    # only c labelled: its row tracks (1 - 0.5) e_c + 0.5 (0, 0, 3) = (0, 0, 2); alone on its sub-simplex it
    # gets weight 1 in the update; a and b are untouched, and the weights keep their values.
    direction, step_weights = balancer.combine(torch.tensor([[0.0, 0.0, 3.0]]), ["c"])
    torch.testing.assert_close(direction, torch.tensor([0.0, 0.0, 2.0]))
    torch.testing.assert_close(step_weights, torch.tensor([1.0]))
    torch.testing.assert_close(balancer.memory[:2], memory[:2])
    torch.testing.assert_close(balancer.weights, weights)


def test_state_round_trips_through_a_weights_only_checkpoint():
    balancer = MoCo(["a", "b"], beta=0.3)
    balancer.combine(torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 1.0]]), ["a", "b"])
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)
    buffer.seek(0)
    resumed = MoCo(["a", "b"], beta=0.3)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    grads = torch.tensor([[0.5, 0.0, 1.0], [1.0, 1.0, 1.0]])
    expected, got = balancer.combine(grads, ["a", "b"]), resumed.combine(grads, ["a", "b"])
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(resumed.weights, balancer.weights)


@pytest.mark.parametrize("options,field", [({"beta": 0.0}, "beta"), ({"gamma": -1.0}, "gamma"),
                                           ({"rho": -0.1}, "rho"), ({"mode": "representation"}, "mode"),
                                           ({"task_chunk": 1}, "task_chunk")])
def test_bad_options_are_refused_naming_them(options, field):
    with pytest.raises(ValueError, match=rf"balancing\.options\.{field}"):
        MoCo(["a", "b"], **options)


def test_tracking_shrinks_alternating_noise_to_beta_over_two_minus_beta():
    # g_t = g +- e alternately: y - g obeys a <- (1 - beta) a + beta (+-e), whose 2-cycle is +-beta e / (2 - beta);
    # with beta = 0.5 the tracked gradient is off by e / 3 instead of e.
    g, e = torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([[3.0, -3.0]], dtype=torch.float64)
    balancer = MoCo(["a"], beta=0.5)
    for step in range(60):
        balancer.combine(g + e if step % 2 == 0 else g - e, ["a"])
    torch.testing.assert_close(balancer.memory - g, -e / 3)  # the last gradient drawn was g - e
