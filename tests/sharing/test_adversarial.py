"""Gradient reversal (Ganin & Lempitsky 2015): identity forward, -lambda times the gradient backward."""
from __future__ import annotations

import copy

import pytest
import torch

from sharing._helpers import batch, losses, mlp, tasks
from taskloom.sharing import build_adversarial, build_hard, build_soft, make_adversarial, reverse_gradient


def test_reverse_gradient_is_identity_forward_and_negated_scaled_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = reverse_gradient(x, 2.5)
    assert torch.equal(y, x)
    w = torch.randn(4, 3)
    (y * w).sum().backward()
    assert torch.equal(x.grad, -2.5 * w)


def test_adversarial_head_flips_the_trunk_gradient_and_leaves_the_forward_unchanged():
    torch.manual_seed(0)
    plain = build_hard(mlp, tasks())
    adversarial = make_adversarial(copy.deepcopy(plain), ["sign"], strength=0.5)
    b = batch()
    out_plain, out_adv = plain(b.inputs), adversarial(b.inputs)
    for name in out_plain:
        assert torch.equal(out_plain[name], out_adv[name])
    for task in ("sign", "quadrant"):
        g_plain = torch.autograd.grad(losses(plain, b)[task], plain.shared_parameters())
        g_adv = torch.autograd.grad(losses(adversarial, b)[task], adversarial.shared_parameters())
        factor = -0.5 if task == "sign" else 1.0
        for a, p in zip(g_adv, g_plain):
            assert torch.allclose(a, factor * p, atol=1e-7)
    head_plain = torch.autograd.grad(losses(plain, b)["sign"], plain.task_parameters("sign"))
    head_adv = torch.autograd.grad(losses(adversarial, b)["sign"], adversarial.task_parameters("sign"))
    for a, p in zip(head_adv, head_plain):
        assert torch.allclose(a, p)


def test_adversarial_builder_wraps_a_base_architecture():
    model = build_adversarial(mlp, tasks(), adversarial=["level"], base="low_level", depths={"level": 3})
    assert type(model.heads["level"][0]).__name__ == "GradientReversalLayer"
    with pytest.raises(ValueError, match="unknown task"):
        build_adversarial(mlp, tasks(), adversarial=["nope"])
    with pytest.raises(ValueError, match="shared representation"):
        make_adversarial(build_soft(mlp, tasks()), ["sign"])
