"""The per-task gradient engine and the shared property of every gradient method: it trains every parameter."""
from __future__ import annotations

import pytest
import torch
from balancing._gradient_helpers import GRADIENT_METHODS, TASKS, losses_from, make_data, make_model

from taskloom.balancing import BALANCERS
from taskloom.balancing.jacobian import chain_gradients, gram, head_gradients, task_gradients, write_gradient


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


def _step(name: str, mode: str):
    model = make_model()
    options = {} if name == "mgda_ub" else {"mode": mode}
    balancer = BALANCERS.get(name)(TASKS, **options)
    x, targets = make_data()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    outputs = balancer.outputs(model, x)
    balancer.backward(losses_from(outputs, targets), model)
    optimizer.step()
    return before, model, balancer


@pytest.mark.parametrize("mode", ["parameters", "representation"])
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_one_step_changes_every_trainable_parameter(name, mode):
    if name == "mgda_ub" and mode == "parameters":
        pytest.skip("mgda_ub is mgda in representation mode")
    before, model, balancer = _step(name, mode)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"{name} ({mode}) left {unchanged} unchanged"
    assert balancer.needs_task_gradients


@pytest.mark.parametrize("name", ["mgda", "pcgrad", "upgrad"])
def test_heads_get_their_own_task_gradient(name):
    model = make_model()
    x, targets = make_data()
    balancer = BALANCERS.get(name)(TASKS)
    model.zero_grad()
    losses = losses_from(model(x), targets)
    expected = {n: torch.autograd.grad(losses[n], model.task_parameters(n), retain_graph=True) for n in TASKS}
    balancer.backward(losses, model)
    for n in TASKS:
        for p, g in zip(model.task_parameters(n), expected[n]):
            torch.testing.assert_close(p.grad, g)


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
    with pytest.raises(ValueError, match="balancing.mode"):
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
