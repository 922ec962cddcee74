"""The code paths that differ on CUDA: fp16 loss scaling, bf16 autocast, compile, the vmapped engine, NCCL.

Skipped without a GPU (CI has none); run on a lent GPU machine with
``python -m pytest tests/cuda -q``. Each test checks a defining property (a method sees the
true gradients under loss scaling, the batched engine equals the sequential one, one NCCL
process equals no process group), not that something merely runs.
"""
from __future__ import annotations

import os

import pytest
import torch
from synthetic_tasks import make_three_task_data

from taskloom import MultiTaskModel
from taskloom.balancing import BALANCERS, build_balancer
from taskloom.balancing.gradient import GradientBalancer
from taskloom.balancing.jacobian import task_gradients
from taskloom.data.dataset import BatchLoader
from taskloom.train.trainer import Trainer
from taskloom.trunks import MLP

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GRADIENT = [name for name in BALANCERS if issubclass(BALANCERS.get(name), GradientBalancer)]
CASES = [(name, mode) for name in GRADIENT for mode in BALANCERS.get(name).modes]


def _trainer(tasks, balancer=None, **options) -> Trainer:
    torch.manual_seed(0)
    model = MultiTaskModel(MLP(8, (32, 32)), tasks=tasks)
    settings = {"epochs": 2, "batch_size": 64, "seed": 0, "lr": 3e-3, "device": "cuda", "schedule": "none"}
    return Trainer(model, tasks, balancer, **{**settings, **options})


def _options(name: str, mode: str) -> dict:
    options = {"mode": mode} if name != "mgda_ub" else {}
    if name in ("rlw", "pcgrad", "graddrop"):
        options["seed"] = 0
    return options


def _balancer(name: str, mode: str, tasks):
    return build_balancer(name, [t.name for t in tasks], **_options(name, mode))


@pytest.mark.parametrize("name,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_fp16_loss_scaling_gives_the_method_the_true_gradients(name, mode):
    """Under fp16 the balancer combines unscaled gradients: its task weights match float32's.

    The scale is 65536 at the first step, so a method fed the scaled gradients (Nash-MTL's
    weights scale as 1/sqrt(s), CAGrad's radius as s) would be off by orders of magnitude.
    """
    data, tasks = make_three_task_data(n=256)
    batch = next(iter(BatchLoader(data, 256, seed=0))).to("cuda")
    weights = {}
    for amp in ("none", "fp16"):
        trainer = _trainer(tasks, _balancer(name, mode, tasks), amp=amp)
        trainer.train_step(batch)
        weights[amp] = trainer.balancer.last_weights()
    if not weights["none"]:
        pytest.skip(f"{name} reports no task weights")
    for task, value in weights["none"].items():
        assert weights["fp16"][task] == pytest.approx(value, rel=0.1, abs=0.02), (name, mode, weights)


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_every_gradient_method_learns_under_autocast(amp):
    data, tasks = make_three_task_data(n=512)
    for name, mode in CASES:
        trainer = _trainer(tasks, _balancer(name, mode, tasks), amp=amp, epochs=6)
        before = trainer.evaluate(data)["level"]["mse"]
        trainer.fit(data)
        assert all(torch.isfinite(p).all() for p in trainer.model.parameters()), (name, mode, amp)
        assert trainer.evaluate(data)["level"]["mse"] < before, (name, mode, amp)


def test_batched_engine_equals_sequential_on_cuda():
    torch.manual_seed(0)
    model = MLP(8, (64, 64)).cuda()
    x = torch.randn(128, 8, device="cuda")
    heads = [torch.randn(64, device="cuda") for _ in range(5)]
    z = model(x)
    losses = [((z @ h) ** 2).mean() for h in heads]
    params = list(model.parameters())
    batched = task_gradients(losses, params, batched=True, retain_graph=True)
    sequential = task_gradients(losses, params, batched=False, retain_graph=True)
    torch.testing.assert_close(batched, sequential, rtol=1e-4, atol=1e-6)


def test_compiled_parameter_mode_step_equals_eager():
    data, tasks = make_three_task_data(n=256)
    states = []
    for compile in (False, True):
        trainer = _trainer(tasks, _balancer("pcgrad", "parameters", tasks), compile=compile, epochs=1)
        trainer.fit(data)
        states.append(torch.cat([p.detach().flatten() for p in trainer.model.parameters()]))
    torch.testing.assert_close(states[1], states[0], rtol=1e-4, atol=1e-5)


def test_one_nccl_process_trains_exactly_like_no_process_group(tmp_path):
    """NCCL is chosen for CUDA; with a world of one, every reduction is the identity."""
    from taskloom.train import distributed

    data, tasks = make_three_task_data(n=256)
    plain = _trainer(tasks, _balancer("mgda", "representation", tasks), epochs=1)
    plain.fit(data)
    os.environ.setdefault("LOCAL_RANK", "0")
    communicator = distributed.start("cuda", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert torch.distributed.get_backend() == "nccl"
        grouped = _trainer(tasks, _balancer("mgda", "representation", tasks), epochs=1, communicator=communicator)
        grouped.fit(data)
    finally:
        distributed.stop()
    for a, b in zip(plain.model.parameters(), grouped.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _parameters(trainer: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


@pytest.mark.parametrize("name,mode", [("mgda", "parameters"), ("pcgrad", "representation"),
                                       ("nashmtl", "parameters"), ("graddrop", "parameters")])
def test_task_chunked_engine_equals_the_full_one_on_cuda(name, mode):
    """On CUDA the engine takes the vmapped path; the chunked Gramian must still give the full engine's steps."""
    data, tasks = make_three_task_data(n=256)
    states = []
    for task_chunk in (None, 1):
        balancer = build_balancer(name, [t.name for t in tasks], **_options(name, mode), task_chunk=task_chunk)
        trainer = _trainer(tasks, balancer, epochs=1)
        trainer.fit(data)
        states.append(_parameters(trainer))
    torch.testing.assert_close(states[1], states[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,mode", [("equal", None), ("pcgrad", "parameters"), ("mgda", "representation")])
def test_checkpointed_trunk_with_dropout_steps_like_a_plain_one_on_cuda(name, mode):
    """CUDA's dropout masks come from the device generator: the recomputation must replay them."""
    data, tasks = make_three_task_data(n=256)
    states = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = MultiTaskModel(MLP(8, (32, 32, 32, 32), dropout=0.3), tasks=tasks)
        balancer = build_balancer(name, [t.name for t in tasks], **({} if mode is None else {"mode": mode}))
        trainer = Trainer(model, tasks, balancer, epochs=1, batch_size=64, seed=0, lr=3e-3, device="cuda",
                          schedule="none", checkpointing=checkpointing)
        trainer.fit(data)
        states.append(_parameters(trainer))
    torch.testing.assert_close(states[1], states[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,mode", [("uncertainty", None), ("cagrad", "parameters"), ("upgrad", "representation")])
def test_accumulated_micro_batches_step_like_their_concatenation_on_cuda(name, mode):
    data, tasks = make_three_task_data(n=256)
    batches = list(BatchLoader(data, 64, seed=0))
    states = []
    for accumulate in (False, True):
        balancer = build_balancer(name, [t.name for t in tasks], **({} if mode is None else {"mode": mode}))
        trainer = _trainer(tasks, balancer, epochs=1)
        whole = BatchLoader(data, 256, seed=0)
        step = [b.to("cuda") for b in batches] if accumulate else next(iter(whole)).to("cuda")
        trainer.train_step(step)
        states.append(_parameters(trainer))
    torch.testing.assert_close(states[1], states[0], rtol=1e-4, atol=1e-6)
