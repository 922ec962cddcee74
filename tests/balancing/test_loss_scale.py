"""A loss scale (the fp16 ``GradScaler``'s) scales every method's update and changes nothing else.

With ``backward(losses, model, scale=s)`` a method sees the true losses and gradients, so
its weights and state are those of the unscaled step and every ``.grad`` is S times the
unscaled one; a non-finite gradient makes the update non-finite (the scaler skips that
step) without touching the method's state.
"""
from __future__ import annotations

import math

import pytest
import torch

from balancing._gradient_helpers import TASKS, losses_from, make_data, make_model
from taskloom.balancing import BALANCERS, build_balancer
from taskloom.balancing.gradient import GradientBalancer

SCALE = 1024.0
OPTIONS = {"static": {"weights": {name: 1.0 + i for i, name in enumerate(TASKS)}}}


def _step(method: str, scale: float | None) -> tuple[list[torch.Tensor], dict[str, float]]:
    model, balancer = make_model(), build_balancer(method, TASKS, **OPTIONS.get(method, {}))
    x, targets = make_data()
    if getattr(balancer, "needs_validation", False):  # Auto-Lambda: a fixed validation batch
        xv, tv = make_data(seed=1)
        balancer.attach_validation(lambda m: losses_from(m(xv), tv))
    outputs = balancer.outputs(model, x) if isinstance(balancer, GradientBalancer) else model(x)
    losses = losses_from(outputs, targets)
    balancer.backward(losses, model, scale=None if scale is None else (lambda t: t * scale))
    grads = [p.grad.clone() for p in [*model.parameters(), *balancer.parameters()] if p.grad is not None]
    return grads, balancer.last_weights()


@pytest.mark.parametrize("method", list(BALANCERS))
def test_a_loss_scale_multiplies_the_update_and_leaves_the_weights(method: str) -> None:
    plain, plain_weights = _step(method, None)
    scaled, scaled_weights = _step(method, SCALE)
    assert len(plain) == len(scaled) > 0
    for expected, got in zip(plain, scaled):
        torch.testing.assert_close(got / SCALE, expected, rtol=1e-4, atol=1e-6)
    assert scaled_weights == pytest.approx(plain_weights, rel=1e-4, abs=1e-6)


def test_an_overflowed_scaled_step_gives_a_non_finite_update_and_keeps_the_state() -> None:
    model, balancer = make_model(), build_balancer("gradvac", TASKS)
    x, targets = make_data()
    before = {k: v.clone() for k, v in balancer.state_dict().items()}
    losses = losses_from(balancer.outputs(model, x), targets)
    balancer.backward(losses, model, scale=lambda t: t * float("inf"))
    shared = model.shared_parameters()
    assert not all(torch.isfinite(p.grad).all() for p in shared)
    for key, value in balancer.state_dict().items():
        torch.testing.assert_close(value, before[key], equal_nan=True)
    assert all(math.isfinite(w) or math.isnan(w) for w in balancer.last_weights().values())
