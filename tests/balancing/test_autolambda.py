"""Auto-Lambda (Liu, Johns & Davison 2022): the lookahead meta-gradient by hand and against exact autograd."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.func import functional_call

from taskloom.balancing.autolambda import AutoLambda


class Scalar(nn.Module):
    """One parameter theta; task k's loss is 1/2 (theta - target_k)^2."""

    def __init__(self, theta: float = 0.0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta, dtype=torch.float64))

    def losses(self, targets: dict[str, float]) -> dict[str, torch.Tensor]:
        return {name: 0.5 * (self.theta - target) ** 2 for name, target in targets.items()}


TRAIN = {"a": 1.0, "b": 3.0, "c": -2.0}  # b pulls theta (from 0) toward a's target 1; c pulls it away


def scalar_balancer(**options) -> AutoLambda:
    balancer = AutoLambda(["a", "b", "c"], primary=["a"], lookahead_lr=0.1, **options)
    balancer.attach_validation(lambda model: model.losses({"a": 1.0}))
    return balancer


def test_meta_gradient_and_update_by_hand():
    # grads at theta = 0: (-1, -3, 2); theta' = 0 - 0.1 (-1 - 3 + 2) = 0.2; validation gradient 0.2 - 1 = -0.8;
    # meta_k = -0.1 grad_k (-0.8) = (-0.08, -0.24, 0.16): the helpful auxiliary b gains, the harmful c loses.
    model, balancer = Scalar(), scalar_balancer(lr=1.0, optimizer="sgd")
    assert balancer.meta_gradient(model.losses(TRAIN), model) == pytest.approx({"a": -0.08, "b": -0.24, "c": 0.16})
    assert float(model.theta.detach()) == 0.0  # the lookahead is undone
    balancer.backward(model.losses(TRAIN), model)
    torch.testing.assert_close(balancer.weights, torch.tensor([1.08, 1.24, 0.84]))
    # the step uses the new weights: 1.08 (-1) + 1.24 (-3) + 0.84 (2) = -3.12
    torch.testing.assert_close(model.theta.grad, torch.tensor(-3.12, dtype=torch.float64))
    assert balancer.last_weights() == pytest.approx({"a": 1.08, "b": 1.24, "c": 0.84})


def test_weights_move_toward_the_auxiliary_that_helps_the_primary_task():
    model, balancer = Scalar(), scalar_balancer(lr=0.01)  # Adam, as the authors' code
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):  # theta stays below 1, so b keeps helping and c keeps hurting
        optimizer.zero_grad()
        balancer.backward(model.losses(TRAIN), model)
        optimizer.step()
        assert float(model.theta.detach()) < 1.0
    a, b, c = balancer.weights.tolist()
    assert b > 1.0 > c and b > a


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.trunk = nn.Linear(3, 2).double()
        self.heads = nn.ModuleDict({name: nn.Linear(2, 1).double() for name in "ab"})
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = torch.tanh(self.trunk(x))
        return {name: head(z).squeeze(1) for name, head in self.heads.items()}


def _data(seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    return x, {name: torch.randn(8, generator=generator, dtype=torch.float64) for name in "ab"}


def _mse(outputs, targets):
    return {name: ((outputs[name] - targets[name]) ** 2).mean() for name in targets}


def test_meta_gradient_equals_the_exact_second_order_derivative_on_a_tiny_model():
    model, (x, y), (xv, yv) = Tiny(), _data(1), _data(2)
    # 0.75 is exact in float32, the weights' dtype, so both sides start from the same lambda
    balancer = AutoLambda(["a", "b"], primary=["a"], lookahead_lr=0.3, weight_init=0.75)
    balancer.attach_validation(lambda m: _mse(m(xv), yv))
    got = balancer.meta_gradient(_mse(model(x), y), model)
    # exact: differentiate L_val(theta - alpha sum_k lambda_k grad L_k(theta)) in lambda through autograd
    lam = torch.full((2,), 0.75, dtype=torch.float64, requires_grad=True)
    params = dict(model.named_parameters())
    train = _mse(functional_call(model, params, (x,)), y)
    total = lam[0] * train["a"] + lam[1] * train["b"]
    grads = torch.autograd.grad(total, list(params.values()), create_graph=True)
    stepped = {name: p - 0.3 * g for (name, p), g in zip(params.items(), grads)}
    validation = _mse(functional_call(model, stepped, (xv,)), yv)["a"]
    exact = torch.autograd.grad(validation, lam)[0]
    assert [got["a"], got["b"]] == pytest.approx(exact.tolist(), rel=1e-9, abs=1e-12)
    assert exact.abs().min() > 1e-4  # a case where the meta-gradient is not trivially zero


def test_a_validation_batch_without_the_primary_task_leaves_the_weights():
    model = Scalar()
    balancer = AutoLambda(["a", "b"], primary=["a"], lr=1.0, optimizer="sgd")
    balancer.attach_validation(lambda m: m.losses({"b": 2.0}))  # a unlabelled in this validation batch
    balancer.backward(model.losses({"a": 1.0, "b": 3.0}), model)
    torch.testing.assert_close(balancer.weights, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(model.theta.grad, torch.tensor(-4.0, dtype=torch.float64))


def test_a_task_without_training_labels_keeps_its_weight_and_adam_state():
    model, balancer = Scalar(), scalar_balancer(lr=0.5)
    balancer.backward(model.losses(TRAIN), model)
    weights, moments = balancer.weights.clone(), balancer.adam_exp_avg.clone()
    model.theta.grad = None
    balancer.backward(model.losses({"a": 1.0, "b": 3.0}), model)
    assert float(balancer.weights[2]) == float(weights[2]) and float(balancer.adam_exp_avg[2]) == float(moments[2])
    assert float(balancer.adam_steps[2]) == 1.0 and float(balancer.adam_steps[0]) == 2.0


def test_state_round_trips_through_a_weights_only_checkpoint():
    model, balancer = Scalar(), scalar_balancer(lr=0.5)
    balancer.backward(model.losses(TRAIN), model)
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)
    buffer.seek(0)
    resumed = scalar_balancer(lr=0.5)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    twin = Scalar()
    balancer.backward(model.losses(TRAIN), model)
    resumed.backward(twin.losses(TRAIN), twin)
    torch.testing.assert_close(resumed.weights, balancer.weights)


def test_unknown_primary_tasks_and_bad_options_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"balancing\.options\.primary.*\['z'\]"):
        AutoLambda(["a", "b"], primary=["a", "z"])
    for options, field in [({"primary": []}, "primary"), ({"lookahead_lr": 0.0}, "lookahead_lr"),
                           ({"lr": -1.0}, "lr"), ({"optimizer": "lbfgs"}, "optimizer")]:
        with pytest.raises(ValueError, match=rf"balancing\.options\.{field}"):
            AutoLambda(["a", "b"], **options)


def test_without_validation_batches_the_step_is_refused_with_what_to_do():
    model = Scalar()
    with pytest.raises(ValueError, match="validation"):
        AutoLambda(["a"]).backward(model.losses({"a": 1.0}), model)


def test_the_head_of_a_task_without_training_labels_gets_no_gradient():
    from taskloom import MultiTaskModel
    from taskloom.trunks import MLP

    torch.manual_seed(0)
    model = MultiTaskModel(MLP(3, hidden=(4,)), heads={"a": nn.Linear(4, 1), "b": nn.Linear(4, 1)})
    x, y = torch.randn(6, 3), torch.randn(6, 1)
    balancer = AutoLambda(["a", "b"], primary=["a"])
    balancer.attach_validation(lambda m: {"a": ((m(x)["a"] - y) ** 2).mean()})
    balancer.backward({"a": ((model(x)["a"] - y) ** 2).mean()}, model)  # b unlabelled in this batch
    assert all(p.grad is None for p in model.heads["b"].parameters())
    assert all(p.grad is not None and p.grad.any() for p in model.heads["a"].parameters())
    assert all(p.grad is not None for p in model.shared_parameters())
