"""IMTL-G (Liu et al. 2021): equal projections of the update onto every task's unit gradient."""
from __future__ import annotations

import pytest
import torch

from balancing._gradient_helpers import random_grads
from taskloom.balancing import aggregate
from taskloom.balancing.imtl import imtl_g_weights


@pytest.mark.parametrize("k", [2, 3, 6])
@pytest.mark.parametrize("seed", [0, 1])
def test_equal_projections_on_unit_gradients(k, seed):
    grads = random_grads(k, 15, seed=seed) * (1 + torch.arange(k, dtype=torch.float64)).unsqueeze(1)
    d = aggregate("imtl_g", grads)
    projections = (grads / grads.norm(dim=1, keepdim=True)) @ d
    torch.testing.assert_close(projections, projections[:1].expand(k), rtol=1e-9, atol=1e-9)
    assert abs(float(imtl_g_weights(grads @ grads.T).sum()) - 1) < 1e-9


def test_two_orthogonal_gradients_by_hand():
    grads = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # d = a g1 + (1 - a) g2 with 2a = 1 - a: a = 1/3
    torch.testing.assert_close(imtl_g_weights(grads @ grads.T), torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parallel_gradients_give_a_finite_update_with_equal_projections(dtype):
    g1 = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=dtype)
    for grads in (torch.stack([g1, 3 * g1]),  # the system is singular: any weights give equal projections
                  torch.stack([g1, 3 * g1, torch.tensor([0.0, 1.0, 1.0, -2.0], dtype=dtype)])):
        weights = imtl_g_weights(grads @ grads.T)
        assert torch.isfinite(weights).all() and abs(float(weights.sum()) - 1) < 1e-6
        d = weights @ grads
        projections = (grads / grads.norm(dim=1, keepdim=True)) @ d
        torch.testing.assert_close(projections, projections[:1].expand(len(grads)), rtol=1e-5, atol=1e-6)
        assert float(d @ g1) > 0  # still a descent direction for the parallel pair


def test_a_repeated_task_among_many_in_float32():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(4, 5000, generator=generator)
    grads = torch.cat([base, 2 * base[:1]])  # the gram's parallel pair is only equal to float32 precision
    d = aggregate("imtl_g", grads)
    projections = (grads / grads.norm(dim=1, keepdim=True)) @ d
    assert torch.isfinite(d).all()
    torch.testing.assert_close(projections, projections[:1].expand(5), rtol=1e-4, atol=0)
