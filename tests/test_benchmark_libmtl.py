"""The benchmarks' LibMTL harness (benchmarks/_libmtl.py, _libmtl_bilevel.py) steps as LibMTL's Trainer does.

MoDo gets its three batches; Auto-Lambda its inner, outer and full batches in LibMTL's own bilevel step.

Skipped unless a LibMTL source checkout (and its imports) is on PYTHONPATH.
"""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
_libmtl = pytest.importorskip("_libmtl")
if _libmtl.libmtl_unavailable():
    pytest.skip(_libmtl.libmtl_unavailable(), allow_module_level=True)

from taskloom import MultiTaskModel  # noqa: E402


def make_model() -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(nn.Sequential(nn.Linear(3, 4), nn.Tanh()), heads={"a": nn.Linear(4, 1), "b": nn.Linear(4, 1)})


def samples(seed: int):
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 3, generator=generator), torch.randn(16, 2, generator=generator)
    return x, lambda out: [F.mse_loss(out["a"][:, 0], y[:, 0]), F.mse_loss(out["b"][:, 0], y[:, 1])]


def trunk_gradients(model: MultiTaskModel, x, losses_of) -> torch.Tensor:
    out = model(x)
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.trunk.parameters()),
                                                                  retain_graph=True)])
            for loss in losses_of(out)]
    return torch.stack(rows)


def test_modo_steps_on_three_batches_as_its_definition_says():
    model = make_model()
    batches = [samples(seed) for seed in (1, 2, 3)]
    g1, g2, g3 = (trunk_gradients(model, x, of) for x, of in batches)
    gamma, rho = 0.5, 0.1
    step = 0.5 * torch.ones(2) - gamma * (g1 @ (g2.T @ (0.5 * torch.ones(2))) + rho * 0.5 * torch.ones(2))
    # two tasks: the projection onto the simplex shifts both entries equally, then clips at 0
    shifted = step - (step.sum() - 1) / 2
    lam = shifted.clamp_min(0) / shifted.clamp_min(0).sum()
    expected = -(lam @ g3)  # SGD, lr 1: the trunk moves by minus the MoDo direction

    before = torch.cat([p.detach().reshape(-1).clone() for p in model.trunk.parameters()])
    runner = _libmtl.LibMTLMethod(model, "MoDo", kwargs={"MoDo_gamma": gamma, "MoDo_rho": rho},
                                  make_optimizer=lambda params, own: torch.optim.SGD(params, lr=1.0))
    runner.begin(1)
    runner.set_epoch(0)
    runner.step(*batches[0], more=batches[1:])
    after = torch.cat([p.detach().reshape(-1) for p in model.trunk.parameters()])
    assert torch.allclose(runner.weighting.lambd, lam, atol=1e-6)
    assert torch.allclose(after - before, expected, atol=1e-5)


def test_a_three_batch_method_refuses_one_batch():
    runner = _libmtl.LibMTLMethod(make_model(), "SDMGrad")
    with pytest.raises(ValueError, match="SDMGrad takes 3 batch"):
        runner.step(*samples(1))


def flat_gradients(model: MultiTaskModel, x, losses_of) -> torch.Tensor:
    """One row per task: the gradient of its loss over every parameter of the model (trunk and heads)."""
    parameters = list(model.parameters())
    rows = []
    for loss in losses_of(model(x)):
        grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                               for g, p in zip(grads, parameters)]))
    return torch.stack(rows)


def test_autolambda_takes_libmtls_bilevel_step_on_inner_outer_and_full_batches():
    bilevel = pytest.importorskip("_libmtl_bilevel")
    model = make_model()
    inner, outer, full = (samples(seed) for seed in (1, 2, 3))
    lr, outer_lr = 0.5, 0.1
    theta = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    g_inner = flat_gradients(model, *inner)
    g_full = flat_gradients(model, *full)
    # the lookahead: one SGD step on the inner batch's loss, softmax weights (1/2, 1/2) at the start
    lookahead = make_model()
    torch.nn.utils.vector_to_parameters(theta - lr * 0.5 * g_inner.sum(0), lookahead.parameters())
    g_outer = flat_gradients(lookahead, *outer).sum(0)
    aligned = g_inner @ g_outer  # d outer loss / d lambda_k = -lr * aligned_k (Liu et al. 2022, eq. 3)
    # through the softmax at (1/2, 1/2): d lambda / d logits = [[1/4, -1/4], [-1/4, 1/4]]
    logit_gradient = -lr * 0.25 * (aligned[0] - aligned[1]) * torch.tensor([1.0, -1.0])
    logits = 0.5 - outer_lr * torch.sign(logit_gradient)  # Adam's first step: lr times the sign
    weights = torch.softmax(logits, dim=0)
    expected = theta - lr * (weights @ g_full)  # SGD on the full batch's weighted loss

    runner = bilevel.LibMTLAutoLambda(model, kwargs={"outer_lr": outer_lr},
                                      make_optimizer=lambda params, own: torch.optim.SGD(params, lr=lr))
    assert runner.options["inner_step"] == 1
    runner.step(inner, outer, full)
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.allclose(runner.tw.weights.detach(), logits, atol=1e-5)
    assert torch.allclose(runner.task_weights(), weights, atol=1e-5)
    assert torch.allclose(after, expected, atol=1e-5)
