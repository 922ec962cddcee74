"""Aligned-MTL (Senushkin et al. 2023): aligned components are orthogonal with equal norms sqrt(lambda_min)."""
from __future__ import annotations

import pytest
import torch

from balancing._gradient_helpers import random_grads
from taskloom.balancing import aggregate
from taskloom.balancing.alignedmtl import alignment_matrix


@pytest.mark.parametrize("k", [2, 4, 7])
def test_aligned_components_are_orthogonal_with_equal_norms(k):
    grads = random_grads(k, 12, seed=k) * (1 + torch.arange(k, dtype=torch.float64)).unsqueeze(1)
    gram = grads @ grads.T
    aligned = alignment_matrix(gram) @ grads
    smallest = torch.linalg.eigvalsh(gram).min()
    torch.testing.assert_close(aligned @ aligned.T, smallest * torch.eye(k, dtype=torch.float64), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(aggregate("alignedmtl", grads), aligned.sum(dim=0))


def test_preferences_weight_the_aligned_components():
    grads = random_grads(3, 8, seed=1)
    aligned = alignment_matrix(grads @ grads.T) @ grads
    pref = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    torch.testing.assert_close(aggregate("alignedmtl", grads, preferences=pref), pref @ aligned)


def test_rank_deficient_gradients_stay_finite():
    g = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    assert torch.isfinite(aggregate("alignedmtl", g)).all()
