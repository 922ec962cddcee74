"""Properties every balancing method shares, written once and applied to each registered method.

A step trains every trainable parameter (trunk, every head, the method's own) in every mode;
a gradient method gives each head exactly its own task's gradient by every path (the
balancer's outputs, a plain forward, an explicit representation); and a method rebuilt from
its ``state_dict`` continues exactly as the original (random draws and moving averages included).
"""
from __future__ import annotations

import io

import pytest
import torch
from balancing._gradient_helpers import TASKS, losses_from, make_data, make_model

from taskloom.balancing import BALANCERS, build_balancer
from taskloom.balancing.gradient import MODES, GradientBalancer

OPTIONS = {"static": {"weights": {"a": 1.0, "b": 2.0, "c": 0.5}}, "rlw": {"seed": 0}}
GRADIENT = [name for name in BALANCERS if issubclass(BALANCERS.get(name), GradientBalancer)]
LOSS = [name for name in BALANCERS if name not in GRADIENT]
REFUSED = {(name, mode) for name in GRADIENT for mode in MODES if mode not in BALANCERS.get(name).modes}
CASES = [(name, None) for name in LOSS] + [
    (name, mode) for name in GRADIENT for mode in MODES if (name, mode) not in REFUSED
]
PATHS = [("parameters", "outputs"), ("parameters", "plain"), ("parameters", "explicit"),
         ("representation", "outputs"), ("representation", "explicit")]  # a plain forward has no representation
HEAD_CASES = [(name, mode, path) for name in GRADIENT for mode, path in PATHS if (name, mode) not in REFUSED]


def build(name: str, mode: str | None = None):
    options = dict(OPTIONS.get(name, {}))
    if mode is not None:
        options["mode"] = mode
    balancer = build_balancer(name, TASKS, **options)
    if getattr(balancer, "needs_validation", False):  # Auto-Lambda: a fixed validation batch, as a trainer would give
        x, targets = make_data(seed=1)
        balancer.attach_validation(lambda model: losses_from(model(x), targets))
    return balancer


def train_step(balancer, model, optimizer, x, targets) -> None:
    """What the trainer does: zero, forward (through the balancer for gradient methods), backward, step, hook."""
    optimizer.zero_grad()
    outputs = balancer.outputs(model, x) if isinstance(balancer, GradientBalancer) else model(x)
    balancer.backward(losses_from(outputs, targets), model)
    optimizer.step()
    if balancer.needs_post_step_losses:
        with torch.no_grad():
            balancer.post_step(losses_from(model(x), targets))


def case_id(case) -> str:
    return case[0] if case[1] is None else f"{case[0]}-{case[1]}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_one_step_changes_every_trainable_parameter(case):
    name, mode = case
    model, balancer = make_model(), build(name, mode)
    x, targets = make_data()
    named = list(model.named_parameters()) + [(f"balancer.{n}", p) for n, p in balancer.named_parameters()]
    before = {n: p.detach().clone() for n, p in named}
    optimizer = torch.optim.SGD([p for _, p in named], lr=0.1)
    train_step(balancer, model, optimizer, x, targets)
    unchanged = [n for n, p in named if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"{name} ({mode or 'loss level'}) left {unchanged} unchanged"


@pytest.mark.parametrize("name,mode,path", HEAD_CASES)
def test_heads_get_their_own_task_gradient(name, mode, path):
    model, balancer = make_model(), build(name, mode)
    x, targets = make_data()
    representation = None
    if path == "outputs":
        outputs = balancer.outputs(model, x)
    elif path == "plain":
        outputs = model(x)
    else:
        representation = model.representation(x)
        outputs = model.heads_forward(representation)
    losses = losses_from(outputs, targets)
    objectives = dict(zip(TASKS, balancer.transform_losses([losses[n] for n in TASKS])))
    expected = {n: torch.autograd.grad(objectives[n], model.task_parameters(n), retain_graph=True) for n in TASKS}
    balancer.backward(losses, model, representation=representation)
    for n in TASKS:
        for parameter, gradient in zip(model.task_parameters(n), expected[n]):
            torch.testing.assert_close(parameter.grad, gradient, rtol=1e-6, atol=1e-8)
    assert all(p.grad is not None and p.grad.any() for p in model.shared_parameters())


@pytest.mark.parametrize("name,mode", sorted(REFUSED))
def test_a_mode_a_method_is_not_defined_for_is_refused_naming_the_option(name, mode):
    with pytest.raises(ValueError, match=r"balancing\.options\.mode"):
        build(name, mode)


def _round_trip(balancer):
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)  # as a checkpoint does
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_a_balancer_restored_from_its_state_dict_continues_identically(case):
    name, mode = case
    x, targets = make_data()
    model, balancer = make_model(), build(name, mode)
    optimizer = torch.optim.SGD(list(model.parameters()) + list(balancer.parameters()), lr=0.05)
    for _ in range(3):
        train_step(balancer, model, optimizer, x, targets)
    resumed_model, resumed = make_model(), build(name, mode)
    resumed_model.load_state_dict(model.state_dict())
    resumed.load_state_dict(_round_trip(balancer))
    resumed_optimizer = torch.optim.SGD(list(resumed_model.parameters()) + list(resumed.parameters()), lr=0.05)
    for _ in range(2):
        train_step(balancer, model, optimizer, x, targets)
        train_step(resumed, resumed_model, resumed_optimizer, x, targets)
    for (key, value), resumed_value in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(resumed_value, value, rtol=1e-6, atol=1e-9, msg=f"{name}: {key} differs")
