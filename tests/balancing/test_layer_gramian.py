"""The layer Gramian engine against the full one, and its Gramian against J J^T of an explicit Jacobian.

Acceptance: for every method whose update is a function of the Gramian, in parameter mode, three
SGD steps (the second misses a task) leave every parameter's ``.grad`` equal to the full engine's
to 1e-5, through the representation and through a plain forward, sequential and vmapped.
"""
from __future__ import annotations

import logging
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from balancing.test_gramian_engine import NAMES, STEP_TASKS, make_batches  # the same tasks and batches
from taskloom.balancing import BALANCERS, build_balancer
from taskloom.balancing.gradient import GradientBalancer
from taskloom.balancing.layer_gramian import Capture, Layer, _LayerRows, layer_gramian, plan_layers
from taskloom.config import ConfigError, parse_config
from taskloom.sharing.base import MultiTaskModule
from taskloom.sharing.hard import MultiTaskModel
from taskloom.trunks import MLP

GRAMIAN_METHODS = [n for n in BALANCERS if issubclass(BALANCERS.get(n), GradientBalancer)
                   and BALANCERS.get(n).weights_from_gram and "parameters" in BALANCERS.get(n).modes]
OTHER_METHODS = [n for n in BALANCERS if issubclass(BALANCERS.get(n), GradientBalancer)
                 and not BALANCERS.get(n).weights_from_gram]


def make_model(trunk: Callable[[], nn.Module] | None = None) -> MultiTaskModel:
    torch.manual_seed(0)
    trunk_module = trunk() if trunk else MLP(4, hidden=(8, 6))
    return MultiTaskModel(trunk_module, heads={n: nn.Linear(6, 1) for n in NAMES})


def grads_per_step(name: str, engine: str, path: str = "outputs", batched: bool | None = None,
                   trunk: Callable[[], nn.Module] | None = None, model: MultiTaskModule | None = None) -> list[list[torch.Tensor]]:
    """Every parameter's ``.grad`` after each of three steps (zeros where a step left none)."""
    model = model if model is not None else make_model(trunk)
    balancer = build_balancer(name, NAMES, mode="parameters", engine=engine, batched=batched)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    for x, targets in make_batches():
        optimizer.zero_grad()
        outputs = balancer.outputs(model, x) if path == "outputs" else model(x)
        balancer.backward({n: F.mse_loss(outputs[n], targets[n]) for n in targets}, model)
        steps.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()])
        optimizer.step()
    return steps


def assert_same(expected: list[list[torch.Tensor]], got: list[list[torch.Tensor]], what: str) -> None:
    for number, (e_step, g_step) in enumerate(zip(expected, got), start=1):
        assert any(bool(e.abs().sum() > 0) for e in e_step)
        for index, (e, g) in enumerate(zip(e_step, g_step)):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=f"{what}: parameter {index}, step {number}")


@pytest.mark.parametrize("name", GRAMIAN_METHODS)
def test_layer_gramian_engine_writes_the_full_engines_gradients(name, caplog):
    with caplog.at_level(logging.INFO, logger="taskloom.balancing.gradient"):
        gramian = grads_per_step(name, "auto")
    assert "gradient engine: layer Gramian" in caplog.text
    assert_same(grads_per_step(name, "jacobian"), gramian, name)


class NoRepresentation(MultiTaskModule):
    """A trunk and heads without ``representation``: the engine back-propagates the objectives themselves."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh())
        self.heads = nn.ModuleDict({n: nn.Linear(6, 1) for n in NAMES})

    def forward(self, x):
        z = self.trunk(x)
        return {n: head(z) for n, head in self.heads.items()}

    def shared_parameters(self):
        return list(self.trunk.parameters())

    def task_parameters(self, name):
        return list(self.heads[name].parameters())


@pytest.mark.parametrize("batched", [None, True])
@pytest.mark.parametrize("name", ["upgrad", "mgda", "nashmtl"])
def test_layer_gramian_engine_without_a_representation(name, batched):
    assert_same(grads_per_step(name, "jacobian", model=NoRepresentation(), batched=batched),
                grads_per_step(name, "gramian", model=NoRepresentation(), batched=batched), name)


@pytest.mark.parametrize("name", ["upgrad", "cagrad"])
def test_layer_gramian_engine_vmapped(name):
    assert_same(grads_per_step(name, "jacobian", batched=True), grads_per_step(name, "gramian", batched=True), name)


def test_gramian_equals_j_jt_of_the_explicit_jacobian_on_a_hand_made_network():
    """Two Linear layers (one called twice), K = 3 losses; the Jacobian built by hand from autograd."""
    torch.manual_seed(3)
    first, second = nn.Linear(3, 4), nn.Linear(4, 2, bias=False)
    x = torch.randn(5, 3)
    layers, reason = plan_layers(nn.ModuleList([first, second]), [*first.parameters(), *second.parameters()])
    assert reason == "" and [layer.bias for layer in layers] == [True, False]
    with Capture(layers):
        hidden = torch.tanh(first(x))
        hidden = torch.tanh(first(hidden[:, :3]))  # the same layer again: its rows are stacked
        out = second(hidden)
    losses = [out[:, 0].square().mean(), (out[:, 1] - 1).abs().sum(), (out.sum(1) * x[:, 0]).mean()]
    params = [first.weight, first.bias, second.weight]
    jacobian = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])
                            for loss in losses])
    expected = (jacobian @ jacobian.T).double()
    torch.testing.assert_close(layer_gramian(losses, layers), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k", [4, 11])  # 11 tasks: the X X^T products come in slices of 2 and a last one of 1
def test_both_contraction_orders_give_the_same_gramian(k):
    """A short batch contracts through X X^T, a long one through the weight gradients: both equal J J^T."""
    generator = torch.Generator().manual_seed(5)
    orders = []
    for n in (2, 64):
        x = torch.randn(n, 3, generator=generator, dtype=torch.float64)  # float64: the orders differ only in rounding
        d = torch.randn(k, n, 2, generator=generator, dtype=torch.float64)
        layer = Layer("hand", nn.Linear(3, 2).double(), weight=True, bias=True,
                      calls=[(x, torch.zeros(n, 2, dtype=torch.float64), 0)])
        rows = _LayerRows(layer, k)
        for t in range(k):
            rows.fill(slice(t, t + 1), [d[t:t + 1]])
        orders.append(rows.by_weights)
        jacobian = torch.cat([(d.transpose(1, 2) @ x).reshape(k, -1), d.sum(1)], dim=1)
        torch.testing.assert_close(rows.block(), jacobian @ jacobian.T, rtol=1e-12, atol=1e-12)
    assert orders == [False, True]


class Normed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 6), nn.PReLU(6), nn.ReLU())
        self.out_features = 6

    def forward(self, x):
        return self.net(x)


def test_unsupported_layer_falls_back_to_the_full_engine_with_a_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="taskloom.balancing.gradient"):
        got = grads_per_step("upgrad", "auto", trunk=Normed)
    assert ("gradient engine: full Jacobian (shared layer trunk.net.1 is a PReLU, not an nn.Linear, nn.Conv2d or "
            "an affine BatchNorm/LayerNorm/GroupNorm)" in caplog.text)
    for e_step, g_step in zip(grads_per_step("upgrad", "jacobian", trunk=Normed), got):
        for e, g in zip(e_step, g_step):
            torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="engine: gramian cannot run: shared layer trunk.net.1 is a PReLU"):
        grads_per_step("upgrad", "gramian", trunk=Normed)


def test_in_place_change_of_a_layer_output_keeps_the_layer_engine(caplog):
    """ReLU(inplace=True) rewrites the Linear's output: its D_t are taken at the edge the Linear made."""
    def trunk() -> nn.Module:
        net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True))
        net.out_features = 6
        return net

    for name in GRAMIAN_METHODS:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="taskloom.balancing.gradient"):
            got = grads_per_step(name, "auto", trunk=trunk)
        assert "gradient engine: layer Gramian" in caplog.text
        assert_same(grads_per_step(name, "jacobian", trunk=trunk), got, name)


def test_a_plain_forward_falls_back_and_gramian_refuses_it(caplog):
    with caplog.at_level(logging.INFO, logger="taskloom.balancing.gradient"):
        grads_per_step("upgrad", "auto", path="plain")
    assert "gradient engine: full Jacobian (the forward did not go through balancer.outputs" in caplog.text
    with pytest.raises(ValueError, match="did not go through balancer.outputs"):
        grads_per_step("upgrad", "gramian", path="plain")


def test_losses_from_another_forward_are_refused_not_silently_zero():
    """Without a representation the losses are back-propagated themselves: not reaching the layers is refused."""
    model, balancer = NoRepresentation(), build_balancer("upgrad", NAMES)
    x, targets = make_batches()[0]
    balancer.outputs(model, x)
    with torch.no_grad():
        stale = model(x)
    outputs = {n: out + model.heads[n].bias * 0 for n, out in stale.items()}  # reaches the heads, not the trunk
    with pytest.raises(ValueError, match="do not depend on the shared layers recorded by balancer.outputs"):
        balancer.backward({n: F.mse_loss(outputs[n], targets[n]) for n in targets}, model)


class OneRank:
    """A communicator of one process: the sums over the ranks are the tensors themselves."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


def test_data_parallelism_falls_back_and_gramian_refuses_it(caplog):
    for engine in ("auto", "gramian"):
        model, balancer = make_model(), build_balancer("upgrad", NAMES, engine=engine)
        balancer.communicator = OneRank()
        x, targets = make_batches()[0]
        outputs = balancer.outputs(model, x)
        losses = {n: F.mse_loss(outputs[n], targets[n]) for n in targets}
        with caplog.at_level(logging.INFO, logger="taskloom.balancing.gradient"):
            if engine == "gramian":
                with pytest.raises(ValueError, match="engine: gramian cannot run: data parallelism"):
                    balancer.backward(losses, model)
            else:
                balancer.backward(losses, model)
    assert "gradient engine: full Jacobian (data parallelism" in caplog.text


def test_a_loss_scale_falls_back_and_gramian_refuses_it(caplog):
    """fp16 training (a loss scale) is left to the full engine, which the update then equals."""
    got = {}
    for engine in ("auto", "jacobian", "gramian"):
        model = make_model()
        balancer = build_balancer("upgrad", NAMES, engine=engine)
        x, targets = make_batches()[0]
        outputs = balancer.outputs(model, x)
        losses = {n: F.mse_loss(outputs[n], targets[n]) for n in targets}
        with caplog.at_level(logging.INFO, logger="taskloom.balancing.gradient"):
            if engine == "gramian":
                with pytest.raises(ValueError, match="mixed precision"):
                    balancer.backward(losses, model, scale=lambda v: v * 8.0)
                continue
            balancer.backward(losses, model, scale=lambda v: v * 8.0)
        got[engine] = [p.grad.clone() for p in model.parameters()]
    assert "gradient engine: full Jacobian (mixed precision" in caplog.text
    for e, g in zip(got["jacobian"], got["auto"]):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("options,message", [
    ({"engine": "fast"}, "must be one of \\['auto', 'gramian', 'jacobian'\\]"),
    ({"engine": "gramian", "mode": "representation"}, "is for mode 'parameters'"),
    ({"engine": "gramian", "task_chunk": 2}, "two different engines"),
])
def test_engine_option_is_validated(options, message):
    with pytest.raises(ValueError, match=message):
        build_balancer("upgrad", NAMES, **options)


@pytest.mark.parametrize("name", OTHER_METHODS)
def test_methods_that_need_the_gradients_refuse_the_gramian_engine(name):
    with pytest.raises(ValueError, match="cannot use balancing.options.engine: gramian"):
        build_balancer(name, NAMES, engine="gramian")
    assert build_balancer(name, NAMES, engine="auto").engine == "auto"


@pytest.mark.parametrize("balancing,message", [
    ({"method": "upgrad", "options": {"engin": "gramian"}}, "balancing.options.engin: unknown option"),
    ({"method": "upgrad", "options": {"engine": "fast"}},
     "balancing.options.engine: must be one of auto, gramian, jacobian, got 'fast'"),
    ({"method": "graddrop", "options": {"engine": "gramian"}}, "balancing.options.engine: graddrop's update"),
    ({"method": "mgda_ub", "options": {"engine": "gramian"}}, "balancing.options.engine: gramian is for mode"),
    ({"method": "upgrad", "options": {"engine": "gramian", "task_chunk": 2}}, "two different engines"),
])
def test_config_refuses_a_bad_engine_with_its_path(balancing, message):
    with pytest.raises(ConfigError) as error:
        parse_config({"balancing": balancing})
    assert message in str(error.value)
    assert parse_config({"balancing": {"method": "upgrad", "options": {"engine": "gramian"}}})


class Lines(logging.Handler):
    """The engine's log lines, kept whatever the trainer does to the root logger's handlers."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_every_architecture_trains_to_the_same_parameters_with_either_engine():
    """Through the Trainer: auto takes the layer Gramian where it can and falls back elsewhere, never differing."""
    from sharing.test_roles import CASES, build
    from sharing.test_with_trainer import train

    logger = logging.getLogger("taskloom.balancing.gradient")
    level = logger.level
    used = {}
    for name, options in CASES:
        lines = Lines()
        logger.addHandler(lines)
        logger.setLevel(logging.INFO)
        try:
            auto = train(build(name, options), "upgrad", engine="auto").model
        finally:
            logger.removeHandler(lines)
            logger.setLevel(level)
        if auto.shared_parameters():  # soft sharing has nothing shared: no engine to choose
            assert any("gradient engine:" in line for line in lines.lines), name
        used[name] = any("gradient engine: layer Gramian" in line for line in lines.lines)
        full = train(build(name, options), "upgrad", engine="jacobian").model
        for (key, got), expected in zip(auto.named_parameters(), full.parameters()):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=f"{name}: {key}")
    assert used["hard"] and used["mmoe"] and not used["cascade"], used  # cascade: label embeddings
