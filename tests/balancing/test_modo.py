"""MoDo (Chen et al. 2023): the double-sampled projected weight update, step by step by hand."""
from __future__ import annotations

import io

import pytest
import torch

from taskloom.balancing.modo import MoDo, modo_step


def test_two_steps_by_hand_use_the_previous_and_the_current_batch():
    balancer = MoDo(["a", "b"], gamma=0.1)
    # step 1, no earlier batch: G1 = G2 = diag(1, 2); G1 G2^T l = (0.5, 2); l - 0.1 (0.5, 2) = (0.45, 0.3),
    # projected (+0.125 each) = (0.575, 0.425); d = G^T l = (0.575, 0.85).
    direction, weights = balancer.combine(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), ["a", "b"])
    torch.testing.assert_close(weights, torch.tensor([0.575, 0.425]))
    torch.testing.assert_close(direction, torch.tensor([0.575, 0.85]))
    # step 2: G2 = [[2, 1], [0, 1]]; G2^T l = (1.15, 1); G1 = the previous batch's diag(1, 2): (1.15, 2);
    # l - 0.1 (1.15, 2) = (0.46, 0.225), projected (+0.1575 each) = (0.6175, 0.3825); d = G2^T l = (1.235, 1).
    # (With the current batch on both sides, G2 G2^T l = (3.3, 1), the weights would be (0.5075, 0.4925).)
    current = torch.tensor([[2.0, 1.0], [0.0, 1.0]])
    direction, weights = balancer.combine(current, ["a", "b"])
    torch.testing.assert_close(weights, torch.tensor([0.6175, 0.3825]))
    torch.testing.assert_close(direction, torch.tensor([1.235, 1.0]))
    torch.testing.assert_close(balancer.memory, current)  # the first sample of the next step


def test_pure_step_with_three_samples_and_clipping():
    first, second = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    update = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    # G1 G2^T l = (0.5, 1); with gamma = 1: (0, -0.5) projects to (0.75, 0.25); d = G3^T l = (3, 1).
    weights, direction = modo_step(first, second, update, torch.tensor([0.5, 0.5]), gamma=1.0)
    torch.testing.assert_close(weights, torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(direction, torch.tensor([3.0, 1.0]))
    # a larger step reaches the vertex: (0.5, 0.5) - 2 (0.5, 1) = (-0.5, -1.5) projects to (1, 0).
    weights, _ = modo_step(first, second, update, torch.tensor([0.5, 0.5]), gamma=2.0)
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.0]))


def test_unbiased_in_expectation_over_independent_samples():
    # two equally likely samples per task; averaging G1 G2^T over all independent pairs gives E[G] E[G]^T,
    # whereas one sample on both sides gives E[G G^T] (the bias MoDo removes).
    samples = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[3.0, 0.0], [0.0, -1.0]])]
    paired = sum(a @ b.T for a in samples for b in samples) / 4
    mean = sum(samples) / 2
    torch.testing.assert_close(paired, mean @ mean.T)
    assert not torch.allclose(sum(a @ a.T for a in samples) / 2, mean @ mean.T)


def test_a_task_without_labels_keeps_its_sample_and_weight():
    balancer = MoDo(["a", "b", "c"], gamma=0.1)
    balancer.combine(torch.eye(3), ["a", "b", "c"])
    memory, weights = balancer.memory.clone(), balancer.weights.clone()
    direction, _ = balancer.combine(torch.tensor([[0.0, 5.0, 0.0]]), ["b"])
    torch.testing.assert_close(direction, torch.tensor([0.0, 5.0, 0.0]))  # b alone: weight 1
    torch.testing.assert_close(balancer.memory[[0, 2]], memory[[0, 2]])
    torch.testing.assert_close(balancer.memory[1], torch.tensor([0.0, 5.0, 0.0]))
    torch.testing.assert_close(balancer.weights, weights)


def test_state_round_trips_through_a_weights_only_checkpoint():
    balancer = MoDo(["a", "b"], gamma=0.3)
    balancer.combine(torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 1.0]]), ["a", "b"])
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)
    buffer.seek(0)
    resumed = MoDo(["a", "b"], gamma=0.3)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    grads = torch.tensor([[0.5, 0.0, 1.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(resumed.combine(grads, ["a", "b"])[0], balancer.combine(grads, ["a", "b"])[0])


@pytest.mark.parametrize("options,field", [({"gamma": 0.0}, "gamma"), ({"rho": -1.0}, "rho"),
                                           ({"mode": "representation"}, "mode"), ({"task_chunk": 2}, "task_chunk")])
def test_bad_options_are_refused_naming_them(options, field):
    with pytest.raises(ValueError, match=rf"balancing\.options\.{field}"):
        MoDo(["a", "b"], **options)
