"""GradDrop (Chen et al. 2020): the sign-purity masking rule, by hand on a fixed uniform draw."""
from __future__ import annotations

import torch

from taskloom.balancing import aggregate


GRADS = torch.tensor([[1.0, -2.0, 3.0], [1.0, 2.0, -1.0]], dtype=torch.float64)
UNIFORM = torch.tensor([0.3, 0.6, 0.8], dtype=torch.float64)


def test_mask_rule_by_hand():
    # purity P = (1 + sum / sum|.|) / 2 = [1, 0.5, 0.75]; P > U keeps positives, P < U keeps negatives
    torch.testing.assert_close(aggregate("graddrop", GRADS, uniform=UNIFORM),
                               torch.tensor([2.0, -2.0, -1.0], dtype=torch.float64))


def test_leak_keeps_a_fraction_of_the_dropped_gradient():
    torch.testing.assert_close(aggregate("graddrop", GRADS, uniform=UNIFORM, leak=0.5),
                               torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(aggregate("graddrop", GRADS, leak=1.0), GRADS.sum(dim=0))


def test_agreeing_signs_are_always_kept_and_the_draw_is_seeded():
    grads = torch.tensor([[1.0, -1.0], [2.0, -3.0]], dtype=torch.float64)
    torch.testing.assert_close(aggregate("graddrop", grads), grads.sum(dim=0))
    first = aggregate("graddrop", GRADS, generator=torch.Generator().manual_seed(1))
    second = aggregate("graddrop", GRADS, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, second)
