"""The layer Gramian engine on convolutions and normalization layers, against the full engine and explicit Jacobians.

Acceptance as for Linear trunks (``test_layer_gramian.py``): for every Gramian method in parameter
mode, three SGD steps (the second misses a task) leave every parameter's ``.grad`` equal to the
full engine's to 1e-5; the Gramian of small networks equals J J^T of a Jacobian built by hand.
"""
from __future__ import annotations

import logging
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from balancing.test_layer_gramian import GRAMIAN_METHODS, NAMES, STEP_TASKS, assert_same
from taskloom.balancing import build_balancer
from taskloom.balancing import layer_kinds
from taskloom.balancing.layer_gramian import Capture, _LayerRows, layer_gramian, plan_layers
from taskloom.cli import default_run_config
from taskloom.sharing.hard import MultiTaskModel
from taskloom.trunks import TRUNKS

GRADIENT_LOG = "taskloom.balancing.gradient"
pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel lengths")


ORDERS = {"weights": layer_kinds.ConvRows, "patches": layer_kinds.ConvPatchRows}


class Trunk(nn.Module):
    def __init__(self, *layers: nn.Module, out_features: int = 6) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.out_features = out_features

    def forward(self, x):
        return self.layers(x)


def conv_trunk() -> Trunk:
    """Stride 2 with padding 1, 'same' with an even kernel (asymmetric padding), dilation 2 with stride (1, 2)."""
    return Trunk(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(),
                 nn.Conv2d(3, 4, (2, 3), padding="same"), nn.Tanh(),
                 nn.Conv2d(4, 4, 3, stride=(1, 2), padding=2, dilation=2, bias=False), nn.Tanh(),
                 nn.Flatten(), nn.Linear(60, 6), nn.Tanh())


def deep_conv_trunk() -> Trunk:
    """A deep layer on a 1 x 1 output map (few positions, many weights): its Gramian goes through the patches."""
    return Trunk(nn.Conv2d(2, 8, 3, stride=3), nn.Tanh(), nn.Conv2d(8, 16, (2, 3), padding="same"), nn.Tanh(),
                 nn.Conv2d(16, 6, 3), nn.Flatten())


def norm_mlp() -> Trunk:
    """BatchNorm1d in training mode, LayerNorm with and without bias."""
    return Trunk(nn.Flatten(), nn.Linear(200, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 6),
                 nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 6), nn.LayerNorm(6, bias=False))


def conv_norm_trunk() -> Trunk:
    """BatchNorm2d (its mode set by the test), GroupNorm, a 'valid' convolution."""
    return Trunk(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(),
                 nn.Conv2d(4, 4, 3, stride=2, padding="valid"), nn.GroupNorm(2, 4), nn.Tanh(),
                 nn.Flatten(), nn.Linear(64, 6))


class ResidualBlock(nn.Module):
    """torchvision's basic block: BatchNorm outputs changed in place by ``out += identity`` and ``ReLU(inplace=True)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


def residual_trunk() -> Trunk:
    return Trunk(nn.Conv2d(2, 3, 3, padding=1), ResidualBlock(3), nn.Flatten(), nn.Linear(300, 6), nn.Tanh())


def make_model(trunk: Callable[[], nn.Module], eval_norms: bool = False) -> MultiTaskModel:
    torch.manual_seed(0)
    model = MultiTaskModel(trunk(), heads={n: nn.Linear(6, 1) for n in NAMES})
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and eval_norms:
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.eval()
    return model


def make_batches() -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for tasks in STEP_TASKS:
        x = torch.randn(8, 2, 10, 10, generator=generator)
        batches.append((x, {n: torch.randn(8, 1, generator=generator) + i for i, n in enumerate(tasks)}))
    return batches


def grads_per_step(name: str, engine: str, trunk: Callable[[], nn.Module], eval_norms: bool = False,
                   batched: bool | None = None, dtype: torch.dtype = torch.float32,
                   ) -> tuple[list[list[torch.Tensor]], MultiTaskModel]:
    """Every parameter's ``.grad`` after each of three steps, and the trained model."""
    model = make_model(trunk, eval_norms).to(dtype)
    balancer = build_balancer(name, NAMES, mode="parameters", engine=engine, batched=batched)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    steps = []
    for x, targets in make_batches():
        optimizer.zero_grad()
        outputs = balancer.outputs(model, x.to(dtype))
        balancer.backward({n: F.mse_loss(outputs[n], targets[n].to(dtype)) for n in targets}, model)
        steps.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()])
        optimizer.step()
    return steps, model


TRUNKS_UNDER_TEST = {"conv": (conv_trunk, False), "deep_conv": (deep_conv_trunk, False), "norm_mlp": (norm_mlp, False),
                     "conv_bn_eval": (conv_norm_trunk, True), "conv_bn_train": (conv_norm_trunk, False),
                     "residual_in_place": (residual_trunk, False)}


@pytest.mark.parametrize("trunk", list(TRUNKS_UNDER_TEST))
@pytest.mark.parametrize("name", GRAMIAN_METHODS)
def test_layer_engine_writes_the_full_engines_gradients(name, trunk, caplog):
    build, eval_norms = TRUNKS_UNDER_TEST[trunk]
    with caplog.at_level(logging.INFO, logger=GRADIENT_LOG):
        got, _ = grads_per_step(name, "auto", build, eval_norms)
    assert "gradient engine: layer Gramian" in caplog.text
    assert_same(grads_per_step(name, "jacobian", build, eval_norms)[0], got, f"{name} on {trunk}")


@pytest.mark.parametrize("order", ["weights", "patches"])
@pytest.mark.parametrize("trunk", list(TRUNKS_UNDER_TEST))
def test_layer_engine_vmapped_writes_the_full_engines_gradients(trunk, order, monkeypatch):
    """All tasks in one vmapped pass (a convolution's tasks folded into its output channels), either order."""
    monkeypatch.setattr(layer_kinds, "conv_rows", ORDERS[order])
    build, eval_norms = TRUNKS_UNDER_TEST[trunk]
    assert_same(grads_per_step("upgrad", "jacobian", build, eval_norms, batched=True)[0],
                grads_per_step("upgrad", "gramian", build, eval_norms, batched=True)[0], trunk)


@pytest.mark.parametrize("trunk", list(TRUNKS_UNDER_TEST))
def test_layer_engine_is_exact_in_double_precision(trunk):
    """In float64 the two engines agree to 1e-10: the float32 differences above are rounding, not approximation."""
    build, eval_norms = TRUNKS_UNDER_TEST[trunk]
    expected = grads_per_step("config", "jacobian", build, eval_norms, dtype=torch.float64)[0]
    got = grads_per_step("config", "gramian", build, eval_norms, dtype=torch.float64)[0]
    for e_step, g_step in zip(expected, got):
        for e, g in zip(e_step, g_step):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_the_cheaper_convolution_order_is_chosen():
    """Many positions and few weights: through the weight gradients; one position, many weights: the patches."""
    model = make_model(deep_conv_trunk)
    layers, reason = plan_layers(model, model.shared_parameters())
    with Capture(layers):
        model.trunk(make_batches()[0][0])
    assert reason == "" and [type(_LayerRows(layer, 5)).__name__ for layer in layers] == \
        ["ConvRows", "ConvRows", "ConvPatchRows"]


def test_batchnorm_running_stats_move_once_per_step():
    """Only the forward updates them: after one step, momentum 0.1 times the batch mean and unbiased variance."""
    model = make_model(conv_norm_trunk)
    norm = model.trunk.layers[1]
    seen = []
    norm.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    balancer = build_balancer("upgrad", NAMES, engine="gramian")
    x, targets = make_batches()[0]
    outputs = balancer.outputs(model, x)
    balancer.backward({n: F.mse_loss(outputs[n], targets[n]) for n in targets}, model)
    assert len(seen) == 1 and int(norm.num_batches_tracked) == 1
    torch.testing.assert_close(norm.running_mean, 0.1 * seen[0].mean((0, 2, 3)))
    torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * seen[0].var((0, 2, 3), unbiased=True))


def tiny_networks() -> dict[str, tuple[list[nn.Module], Callable[[torch.Tensor], torch.Tensor]]]:
    torch.manual_seed(4)
    first, second = nn.Conv2d(2, 3, (2, 3), padding="same", dilation=(1, 2)), nn.Conv2d(3, 2, 3, stride=2)
    norm, group, layer = nn.BatchNorm2d(3), nn.GroupNorm(1, 2), nn.LayerNorm([2, 2])
    for module in (norm, group, layer):
        nn.init.uniform_(module.weight, 0.5, 1.5)
        nn.init.uniform_(module.bias, -0.5, 0.5)
    evaluated = nn.BatchNorm2d(3).eval()
    evaluated.running_mean.uniform_(-1, 1)
    evaluated.running_var.uniform_(0.5, 2)
    nn.init.uniform_(evaluated.weight, 0.5, 1.5)

    sequence, tail = nn.BatchNorm1d(2), nn.LayerNorm(25, bias=False)
    nn.init.uniform_(sequence.weight, 0.5, 1.5)

    def sequences(x):  # BatchNorm1d over (N, C, L), then a LayerNorm without bias over L
        return tail(torch.tanh(sequence(x.flatten(2)))) * x.flatten(2)

    def convs(x):  # the first convolution called twice: its calls add up
        return second(torch.tanh(first(torch.tanh(first(x)[:, :2]))))

    def normed(x):
        return layer(group(second(torch.tanh(norm(first(x))))))

    def evaluation(x):
        return second(torch.tanh(evaluated(first(x))))

    def unbatched(x):  # a (C, H, W) call and a batched one of the same convolution
        return torch.cat([second(torch.tanh(first(x[0]))).flatten(), second(first(x[1:])).flatten()]).reshape(3, -1)

    return {"convs": ([first, second], convs), "unbatched": ([first, second], unbatched), "norms": ([first, norm, second, group, layer], normed),
            "bn_eval": ([first, evaluated, second], evaluation), "sequences": ([sequence, tail], sequences)}


@pytest.mark.parametrize("order", ["weights", "patches"])
@pytest.mark.parametrize("network", ["convs", "unbatched", "norms", "bn_eval", "sequences"])
def test_gramian_equals_j_jt_of_the_explicit_jacobian(network, order, monkeypatch):
    """K = 3 losses of a tiny network; the Jacobian built by hand from autograd, one task at a time."""
    monkeypatch.setattr(layer_kinds, "conv_rows", ORDERS[order])
    modules, forward = tiny_networks()[network]
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(6))
    params = [p for m in modules for p in m.parameters()]
    layers, reason = plan_layers(nn.ModuleList(modules), params)
    assert reason == "" and len(layers) == len(modules)
    with Capture(layers):
        out = forward(x).flatten(1)
    losses = [out[:, 0].square().mean(), (out[:, 1:] - 1).abs().sum(), (out.sum(1) * x[:, 0, 0, 0]).mean()]
    jacobian = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])
                            for loss in losses])
    expected = (jacobian @ jacobian.T).double()
    torch.testing.assert_close(layer_gramian(losses, layers), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conv,reason", [
    (lambda: nn.Conv2d(2, 4, 3, groups=2), "shared layer trunk.layers.0 is an nn.Conv2d with groups=2"),
    (lambda: nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"),
     "shared layer trunk.layers.0 is an nn.Conv2d with padding_mode='reflect'"),
])
def test_unsupported_convolutions_fall_back_or_are_refused(conv, reason, caplog):
    def trunk() -> Trunk:
        layer = conv()
        size = 10 if layer.padding_mode == "reflect" else 8
        return Trunk(layer, nn.Tanh(), nn.Flatten(), nn.Linear(4 * size * size, 6))

    with caplog.at_level(logging.INFO, logger=GRADIENT_LOG):
        got, _ = grads_per_step("upgrad", "auto", trunk)
    assert f"gradient engine: full Jacobian ({reason}" in caplog.text
    assert_same(grads_per_step("upgrad", "jacobian", trunk)[0], got, reason)
    with pytest.raises(ValueError, match=f"engine: gramian cannot run: {reason}"):
        grads_per_step("upgrad", "gramian", trunk)


def test_the_builtin_multimnist_lenet_takes_the_layer_engine(caplog):
    """``taskloom run``'s model: hard sharing over the LeNet trunk on 1 x 36 x 36 MultiMNIST images."""
    config = default_run_config()
    assert (config.model.architecture, config.model.trunk.name) == ("hard", "lenet")
    heads = ("left", "right")

    def run(engine: str) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = MultiTaskModel(TRUNKS.get("lenet")(image_size=36), heads={n: nn.Linear(50, 10) for n in heads})
        balancer = build_balancer("upgrad", list(heads), engine=engine)
        generator = torch.Generator().manual_seed(2)
        x = torch.rand(6, 36, 36, generator=generator)
        targets = {n: torch.randint(0, 10, (6,), generator=generator) for n in heads}
        outputs = balancer.outputs(model, x)
        balancer.backward({n: F.cross_entropy(outputs[n], targets[n]) for n in heads}, model)
        return [p.grad.clone() for p in model.parameters()]

    with caplog.at_level(logging.INFO, logger=GRADIENT_LOG):
        got = run("auto")
    assert "gradient engine: layer Gramian (3 shared layers)" in caplog.text
    assert_same([run("jacobian")], [got], "lenet")
