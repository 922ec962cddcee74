"""The per-task gradient engine: K per-task gradients, batched or sequential, and its per-balancer vmap fallback."""
from __future__ import annotations

import pytest
import torch
from balancing._gradient_helpers import TASKS, losses_from, make_data, make_model

from taskloom.balancing import BALANCERS
from taskloom.balancing.jacobian import (
    VmapFallback,
    chain_gradients,
    gram,
    head_gradients,
    task_gradients,
    write_gradient,
)
from taskloom.sharing.hard import MultiTaskModel


def _reference(losses, params):
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


@pytest.mark.parametrize("batched", [True, False, None])
def test_task_gradients_match_separate_backward_passes(batched):
    model = make_model()
    x, targets = make_data()
    losses = list(losses_from(model(x), targets).values())
    params = model.shared_parameters()
    expected = _reference(losses, params)
    got = task_gradients(losses, params, batched=batched)
    assert got.shape == (len(TASKS), sum(p.numel() for p in params))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gram(got), got @ got.T)


def test_unused_input_gets_zero_rows():
    w = torch.randn(3, requires_grad=True)
    unused = torch.randn(2, requires_grad=True)
    losses = [(w**2).sum(), w.sum()]
    got = task_gradients(losses, [w, unused])
    torch.testing.assert_close(got[:, 3:], torch.zeros(2, 2))
    torch.testing.assert_close(got[0, :3], 2 * w.detach())


def test_write_gradient_adds_in_parameter_shapes():
    a = torch.nn.Parameter(torch.zeros(2, 2))
    b = torch.nn.Parameter(torch.zeros(3))
    b.grad = torch.ones(3)
    write_gradient([a, b], torch.arange(7.0))
    torch.testing.assert_close(a.grad, torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    torch.testing.assert_close(b.grad, torch.tensor([5.0, 6.0, 7.0]))
    with pytest.raises(ValueError, match="entries"):
        write_gradient([a], torch.zeros(5))


def test_representation_mode_passes_representation_explicitly():
    model = make_model()
    x, targets = make_data()
    balancer = BALANCERS.get("mgda")(TASKS, mode="representation")
    z = model.representation(x)
    balancer.backward(losses_from(model.heads_forward(z), targets), model, representation=z)
    assert all(p.grad is not None for p in model.shared_parameters())
    with pytest.raises(ValueError, match="representation"):
        balancer.backward(losses_from(model(x), targets), model)


def test_absent_task_is_skipped_and_unknown_mode_refused():
    model = make_model()
    x, targets = make_data()
    balancer = BALANCERS.get("gradvac")(TASKS)
    losses = losses_from(model(x), {n: targets[n] for n in ["a", "c"]})
    balancer.backward(losses, model)
    assert all(p.grad is None for p in model.task_parameters("b"))
    assert set(balancer.last_weights()) == {"a", "c"}
    with pytest.raises(ValueError, match="balancing.options.mode"):
        BALANCERS.get("pcgrad")(TASKS, mode="layers")


@pytest.mark.parametrize("name", ["upgrad", "pcgrad"])
def test_fast_path_through_the_representation_equals_the_plain_path(name):
    x, targets = make_data()
    grads = []
    for fast in (True, False):
        model = make_model()
        balancer = BALANCERS.get(name)(TASKS, shuffle=False) if name == "pcgrad" else BALANCERS.get(name)(TASKS)
        outputs = balancer.outputs(model, x) if fast else model(x)
        balancer.backward(losses_from(outputs, targets), model)
        grads.append([p.grad.clone() for p in model.parameters()])
    for fast_grad, plain_grad in zip(*grads):
        torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batched", [True, False])
def test_head_and_chain_gradients_match_separate_backward_passes(batched):
    model = make_model()
    x, targets = make_data()
    z = model.representation(x)
    losses = list(losses_from(model.heads_forward(z), targets).values())
    expected = _reference(losses, model.shared_parameters())
    rep_grads, own = head_gradients(losses, z, [model.task_parameters(n) for n in TASKS], batched=batched)
    torch.testing.assert_close(rep_grads, _reference(losses, [z]))
    torch.testing.assert_close(own[1][0], torch.autograd.grad(losses[1], model.task_parameters("b")[0],
                                                              retain_graph=True)[0])
    got = chain_gradients(z, model.shared_parameters(), rep_grads, batched=batched)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


class _Branchy(torch.autograd.Function):
    """Doubles its input; its backward branches on a value, which vmap cannot batch (counts its calls)."""

    calls = 0

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        _Branchy.calls += 1
        return 2 * grad if grad.sum() != 0 else grad


class _OutOfMemory(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise torch.OutOfMemoryError("pretend the device ran out of memory")


class _BranchyTrunk(torch.nn.Module):
    def __init__(self, features: int = 5, hidden: int = 8) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(features, hidden)

    def forward(self, x):
        return torch.tanh(_Branchy.apply(self.linear(x)))


def test_vmap_failure_falls_back_to_sequential_and_is_remembered_by_the_caller_only():
    w = torch.randn(3, requires_grad=True)
    y = _Branchy.apply(w)
    losses = [(y**2).sum(), y.sum(), (y**3).sum()]
    expected = _reference(losses, [w])
    here, elsewhere = VmapFallback(), VmapFallback()
    got = task_gradients(losses, [w], batched=True, retain_graph=True, fallback=here)
    torch.testing.assert_close(got, expected)
    assert here.failed and "RuntimeError" in here.reason
    assert not elsewhere.failed
    _Branchy.calls = 0
    torch.testing.assert_close(task_gradients(losses, [w], batched=True, fallback=here), expected)
    assert _Branchy.calls == 3  # straight to the K sequential passes: no second vmap attempt


def test_out_of_memory_is_not_taken_for_a_vmap_failure():
    w = torch.randn(3, requires_grad=True)
    y = _OutOfMemory.apply(w)
    fallback = VmapFallback()
    with pytest.raises(torch.OutOfMemoryError):
        task_gradients([y.sum(), (y**2).sum()], [w], batched=True, fallback=fallback)
    z = torch.randn(2, 3, requires_grad=True)
    rep = _OutOfMemory.apply(z)
    with pytest.raises(torch.OutOfMemoryError):
        chain_gradients(rep, [z], torch.ones(2, 6), batched=True, fallback=fallback)
    assert not fallback.failed


@pytest.mark.parametrize("fast", [True, False])
def test_each_balancer_keeps_its_own_fallback(fast):
    x, targets = make_data()
    torch.manual_seed(0)
    branchy = MultiTaskModel(_BranchyTrunk(), heads={n: torch.nn.Linear(8, 1) for n in TASKS})
    plain = make_model()
    first = BALANCERS.get("upgrad")(TASKS, batched=True)
    second = BALANCERS.get("upgrad")(TASKS, batched=True)
    reference = BALANCERS.get("upgrad")(TASKS, batched=False)
    grads = {}
    for name, balancer, model in (("first", first, branchy), ("second", second, plain)):
        model.zero_grad()
        outputs = balancer.outputs(model, x) if fast else model(x)
        balancer.backward(losses_from(outputs, targets), model)
        grads[name] = [p.grad.clone() for p in model.parameters()]
    assert first.vmap_fallback.failed and not second.vmap_fallback.failed
    branchy.zero_grad()
    reference.backward(losses_from(branchy(x), targets), branchy)
    for got, expected in zip(grads["first"], [p.grad for p in branchy.parameters()]):
        torch.testing.assert_close(got, expected)
