"""The task-chunked engine (``task_chunk``) against the full one: the same parameters, fewer rows held.

Every method that accepts ``task_chunk``, in each mode it is defined for, with K = 5 tasks in
chunks of 1, 2 (not a divisor) and 5, over three steps whose second one misses a task: the
parameters after each step equal the full engine's. The rows held at once are counted by a spy
on the chunk function (weak references to the rows it returned), never measured by time.
"""
from __future__ import annotations

import logging
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taskloom.balancing import BALANCERS, build_balancer, gramian_engine
from taskloom.balancing.gradient import MODES, GradientBalancer
from taskloom.config import BalancingConfig
from taskloom.sharing.hard import MultiTaskModel
from taskloom.trunks import MLP

NAMES = ["a", "b", "c", "d", "e"]
CHUNKED = [name for name in BALANCERS if issubclass(BALANCERS.get(name), GradientBalancer) and name != "dbmtl"]
CASES = [(name, mode) for name in CHUNKED for mode in MODES if mode in BALANCERS.get(name).modes]
#: the tasks labelled in each of the three steps (the second misses one)
STEP_TASKS = [NAMES, ["a", "b", "d", "e"], NAMES]


def make_model() -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(MLP(4, hidden=(8, 6)), heads={n: nn.Linear(6, 1) for n in NAMES})


def make_batches() -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for tasks in STEP_TASKS:
        x = torch.randn(12, 4, generator=generator)
        batches.append((x, {n: torch.randn(12, 1, generator=generator) + i for i, n in enumerate(tasks)}))
    return batches


def step(balancer, model, optimizer, x, targets, path: str, scale=None) -> None:
    optimizer.zero_grad()
    outputs = balancer.outputs(model, x) if path == "outputs" else model(x)
    losses = {n: F.mse_loss(outputs[n], targets[n]) for n in targets}
    balancer.backward(losses, model, scale=scale)
    optimizer.step()


def trajectory(name: str, mode: str, task_chunk: int | None, path: str = "outputs") -> list[torch.Tensor]:
    """The model's parameters, flattened, after each of the three steps."""
    model = make_model()
    balancer = build_balancer(name, NAMES, mode=mode, task_chunk=task_chunk)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    after = []
    for x, targets in make_batches():
        step(balancer, model, optimizer, x, targets, path)
        after.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return after


class RowSpy:
    """Wraps the chunk function: counts its calls and the largest number of returned rows alive at once."""

    def __init__(self, real) -> None:
        self.real, self.calls, self.most, self.alive, self.sizes = real, 0, 0, {}, []

    def __call__(self, rows, start: int, stop: int) -> torch.Tensor:
        block = self.real(rows, start, stop)
        self.calls += 1
        key = self.calls
        self.alive[key] = (weakref.ref(block, lambda _, key=key: self.alive.pop(key, None)), block.shape[0])
        self.most = max(self.most, sum(count for _, count in self.alive.values()))
        self.sizes.append(block.shape[0])
        return block


@pytest.mark.parametrize("task_chunk", [1, 2, 5])
@pytest.mark.parametrize("name,mode", CASES)
def test_chunked_engine_gives_the_full_engines_parameters(name, mode, task_chunk):
    full = trajectory(name, mode, None)
    chunked = trajectory(name, mode, task_chunk)
    for number, (expected, got) in enumerate(zip(full, chunked), start=1):
        assert not torch.equal(expected, full[0]) or number == 1  # the steps do move the parameters
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=f"{name}/{mode} after step {number}")


@pytest.mark.parametrize("name", [n for n, mode in CASES if mode == "parameters"])
def test_chunked_engine_without_a_representation_gives_the_full_engines_parameters(name):
    torch.testing.assert_close(trajectory(name, "parameters", 2, path="plain")[-1],
                               trajectory(name, "parameters", None, path="plain")[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task_chunk", [1, 2, 5])
@pytest.mark.parametrize("name,mode", [("upgrad", "parameters"), ("pcgrad", "representation"),
                                       ("graddrop", "parameters"), ("graddrop", "representation")])
def test_rows_held_at_once_are_at_most_two_chunks(monkeypatch, name, mode, task_chunk):
    spy = RowSpy(gramian_engine.chunk_rows)
    monkeypatch.setattr(gramian_engine, "chunk_rows", spy)
    model, balancer = make_model(), build_balancer(name, NAMES, mode=mode, task_chunk=task_chunk)
    x, targets = make_batches()[0]
    step(balancer, model, torch.optim.SGD(model.parameters(), lr=0.1), x, targets, "outputs")
    chunks = math.ceil(len(NAMES) / task_chunk)
    if name == "graddrop":  # one pass over the chunks; representation mode a second for the masked sum
        assert spy.calls == chunks * (2 if mode == "representation" else 1)
    else:  # chunk I once, then each later chunk once per earlier one: C (C + 1) / 2
        assert spy.calls == chunks * (chunks + 1) // 2 == gramian_engine.gramian_passes(len(NAMES), task_chunk)
    assert max(spy.sizes) == task_chunk
    assert spy.most <= 2 * task_chunk
    assert spy.most < len(NAMES) or task_chunk == len(NAMES)


def test_gramian_passes_count_for_uneven_chunks():
    assert gramian_engine.chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert gramian_engine.gramian_passes(5, 2) == 6  # chunks 0, 1, 2 held; 1 and 2 again for 0; 2 again for 1
    assert gramian_engine.gramian_passes(40, 40) == 1


def test_chunked_gramian_equals_the_product_of_the_whole_matrix():
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(7, 11, generator=generator, dtype=torch.float64)
    gramian = gramian_engine.chunked_gramian(lambda start, stop: matrix[start:stop], 7, 3)
    torch.testing.assert_close(gramian, matrix @ matrix.T)
    factor = gramian_engine.gramian_factor(gramian, torch.float64)
    torch.testing.assert_close(factor @ factor.T, matrix @ matrix.T)


@pytest.mark.parametrize("name,mode", [("gradvac", "parameters"), ("nashmtl", "representation"),
                                       ("graddrop", "parameters"), ("graddrop", "representation")])
def test_loss_scale_gives_the_unscaled_update_times_the_scale(name, mode):
    grads = {}
    for task_chunk in (None, 2):
        model, balancer = make_model(), build_balancer(name, NAMES, mode=mode, task_chunk=task_chunk)
        x, targets = make_batches()[0]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        step(balancer, model, optimizer, x, targets, "outputs", scale=lambda t: t * 1024.0)
        grads[task_chunk] = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(grads[2], grads[None], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name,mode", [("gradvac", "parameters"), ("pcgrad", "representation"),
                                       ("graddrop", "parameters")])
def test_overflowing_scale_makes_the_step_non_finite_and_leaves_the_state_alone(name, mode):
    model, balancer = make_model(), build_balancer(name, NAMES, mode=mode, task_chunk=2)
    before = {k: v.clone() for k, v in balancer.state_dict().items() if isinstance(v, torch.Tensor)}
    x, targets = make_batches()[0]
    step(balancer, model, torch.optim.SGD(model.parameters(), lr=0.0), x, targets, "outputs",
         scale=lambda t: t * float("inf"))
    trunk = torch.cat([p.grad.reshape(-1) for p in model.trunk.parameters()])
    assert not torch.isfinite(trunk).all()
    assert balancer.last_weights() == {}
    for key, value in balancer.state_dict().items():
        if key in before:
            assert torch.equal(value, before[key]), f"{name} changed {key} on a skipped step"


def test_dbmtl_refuses_task_chunk_naming_the_method_and_why():
    with pytest.raises(ValueError, match=r"dbmtl cannot use balancing.options.task_chunk: .*moving average"):
        build_balancer("dbmtl", NAMES, task_chunk=2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_task_chunk_must_be_a_whole_number_of_at_least_one(bad):
    with pytest.raises(ValueError, match=r"task_chunk of UPGrad must be a whole number >= 1"):
        build_balancer("upgrad", NAMES, task_chunk=bad)


def test_a_config_takes_task_chunk_for_gradient_methods_only():
    assert BalancingConfig(method="cagrad", options={"task_chunk": 4}).options["task_chunk"] == 4
    with pytest.raises(ValueError, match="task_chunk"):
        BalancingConfig(method="uncertainty", options={"task_chunk": 4})


def test_data_parallel_parameter_mode_leaves_the_trunk_to_the_trainer_only_for_gramian_methods():
    class Counting:  # a communicator of one rank: all-reduce is the identity
        world_size, rank, bytes_reduced = 1, 0, 0

        def all_reduce_sum(self, tensor):
            return tensor

    model = make_model()
    gramian, graddrop = build_balancer("upgrad", NAMES, task_chunk=2), build_balancer("graddrop", NAMES, task_chunk=2)
    gramian.communicator = graddrop.communicator = Counting()
    assert gramian.reduced_parameters(model) == []  # its weighted backward writes local trunk gradients
    assert len(graddrop.reduced_parameters(model)) == len(list(model.shared_parameters()))


def test_the_engine_is_logged_once(caplog):
    model, balancer = make_model(), build_balancer("mgda", NAMES, task_chunk=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.INFO, logger="taskloom.balancing.gradient"):
        for x, targets in make_batches():
            step(balancer, model, optimizer, x, targets, "outputs")
    lines = [r.getMessage() for r in caplog.records if "engine" in r.getMessage()]
    assert lines == ["MGDA: task-chunked engine, 5 tasks in chunks of 2 (at most 4 per-task gradients held)"]
