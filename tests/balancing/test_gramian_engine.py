"""The task-chunked engine (``task_chunk``) against the full one: the same parameters, fewer rows held.

Every method that accepts ``task_chunk``, in each mode it is defined for, with K = 5 tasks in
chunks of 1, 2 (not a divisor) and 5, over three steps whose second one misses a task: the
parameters after each step equal the full engine's. The rows held at once are counted by a spy
on the chunk function (weak references to the rows it returned), never measured by time.
"""
from __future__ import annotations

import logging
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
#: the methods that keep a K x P state refuse task_chunk (tested below)
WHOLE_GRADIENT_STATE = ("dbmtl", "excessmtl", "moco", "modo")
CHUNKED = [name for name in BALANCERS
           if issubclass(BALANCERS.get(name), GradientBalancer) and name not in WHOLE_GRADIENT_STATE]
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


def trajectory(name: str, mode: str, task_chunk: int | None, path: str = "outputs",
               batched: bool | None = None) -> list[torch.Tensor]:
    """The model's parameters, flattened, after each of the three steps."""
    model = make_model()
    engine = "jacobian" if task_chunk is None else "auto"  # the reference is the full engine, not the layer Gramian
    balancer = build_balancer(name, NAMES, mode=mode, task_chunk=task_chunk, batched=batched, engine=engine)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    after = []
    for x, targets in make_batches():
        step(balancer, model, optimizer, x, targets, path)
        after.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return after


class RowSpy:
    """Wraps the engine's row functions: counts the task rows computed, and the most alive at once.

    ``chunk_rows`` returns a chunk's rows as one tensor; ``task_pieces`` one task's row as
    per-parameter tensors (alive while any of them is). Weak references tell when each is freed.
    """

    def __init__(self, monkeypatch) -> None:
        self.rows_computed, self.most, self.alive, self.calls = 0, 0, {}, 0
        self.largest_chunk = 0
        monkeypatch.setattr(gramian_engine, "chunk_rows", self.wrap(gramian_engine.chunk_rows, chunk=True))
        monkeypatch.setattr(gramian_engine, "task_pieces", self.wrap(gramian_engine.task_pieces, chunk=False))

    def wrap(self, real, chunk: bool):
        def spied(*args):
            result = real(*args)
            self.calls += 1
            key, tensors = self.calls, ([result] if chunk else [t for t in result if t is not None])
            count = result.shape[0] if chunk else 1
            self.rows_computed += count
            self.largest_chunk = max(self.largest_chunk, count)
            self.alive[key] = [count, len(tensors)]
            for tensor in tensors:
                weakref.finalize(tensor, self.freed, key)
            self.most = max(self.most, sum(rows for rows, _ in self.alive.values()))
            return result
        return spied

    def freed(self, key: int) -> None:
        self.alive[key][1] -= 1
        if self.alive[key][1] == 0:
            del self.alive[key]


#: task rows the Gramian of K = 5 takes by hand: chunk I, then every later chunk again (B = 2: 5 + 3 + 1)
GRAMIAN_ROWS = {1: 5 + 4 + 3 + 2 + 1, 2: 9, 5: 5}


@pytest.mark.parametrize("task_chunk", [1, 2, 5])
@pytest.mark.parametrize("name,mode", CASES)
def test_chunked_engine_gives_the_full_engines_parameters(name, mode, task_chunk):
    full = trajectory(name, mode, None)
    chunked = trajectory(name, mode, task_chunk)
    for number, (expected, got) in enumerate(zip(full, chunked), start=1):
        if number > 1:  # each step moves the parameters, so every step is compared
            assert not torch.equal(expected, full[number - 2])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=f"{name}/{mode} after step {number}")


@pytest.mark.parametrize("name", [n for n, mode in CASES if mode == "parameters"])
def test_chunked_engine_without_a_representation_gives_the_full_engines_parameters(name):
    torch.testing.assert_close(trajectory(name, "parameters", 2, path="plain")[-1],
                               trajectory(name, "parameters", None, path="plain")[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["outputs", "plain"])
@pytest.mark.parametrize("name", ["upgrad", "graddrop"])
def test_chunked_engine_on_the_vmapped_path_gives_the_full_engines_parameters(name, path):
    """Where rows are built whole (vmap, as on accelerators), chunk by chunk."""
    torch.testing.assert_close(trajectory(name, "parameters", 2, path=path, batched=True)[-1],
                               trajectory(name, "parameters", None, path=path, batched=True)[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task_chunk", [1, 2, 5])
@pytest.mark.parametrize("name,mode", [("upgrad", "parameters"), ("pcgrad", "representation"),
                                       ("graddrop", "parameters"), ("graddrop", "representation")])
def test_rows_held_at_once_are_at_most_two_chunks(monkeypatch, name, mode, task_chunk):
    spy = RowSpy(monkeypatch)
    model, balancer = make_model(), build_balancer(name, NAMES, mode=mode, task_chunk=task_chunk)
    x, targets = make_batches()[0]
    step(balancer, model, torch.optim.SGD(model.parameters(), lr=0.1), x, targets, "outputs")
    if name == "graddrop":  # one pass over the chunks; representation mode a second for the masked sum
        assert spy.rows_computed == len(NAMES) * (2 if mode == "representation" else 1)
    else:
        assert spy.rows_computed == GRAMIAN_ROWS[task_chunk]
    if name == "graddrop":  # its sums take one task's gradient at a time
        assert spy.largest_chunk == spy.most == 1
    else:
        assert spy.largest_chunk == task_chunk
        assert spy.most <= 2 * task_chunk
    if name != "graddrop":  # chunk I is held whole, later chunks come one task at a time
        assert spy.most <= task_chunk + 1
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


@pytest.mark.parametrize("mode", MODES)
def test_graddrop_with_leak_gives_the_full_engines_parameters(mode):
    runs = {}
    for task_chunk in (None, 2):
        model = make_model()
        balancer = build_balancer("graddrop", NAMES, mode=mode, leak=0.3, task_chunk=task_chunk)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, targets in make_batches():
            step(balancer, model, optimizer, x, targets, "outputs")
        runs[task_chunk] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(runs[2], runs[None], rtol=1e-5, atol=1e-5)


def test_accumulation_refuses_task_chunk_naming_both_options():
    from taskloom.train.accumulate import check_accumulation

    with pytest.raises(ValueError, match=r"train.accumulate > 1 is not supported with balancing.options.task_chunk"):
        check_accumulation(2, build_balancer("upgrad", NAMES, task_chunk=2))
    check_accumulation(1, build_balancer("upgrad", NAMES, task_chunk=2))  # one micro-batch: nothing to refuse


@pytest.mark.parametrize("name,mode", [("upgrad", "parameters"), ("pcgrad", "representation"),
                                       ("graddrop", "parameters")])
def test_chunked_engine_under_activation_checkpointing_gives_the_full_engines_parameters(name, mode):
    """Every recomputing backward pass goes through the checkpointed trunk, which recomputes it again."""
    from taskloom.sharing.checkpointing import enable_checkpointing

    runs = {}
    for task_chunk, checkpointing in ((None, False), (2, True)):
        model = enable_checkpointing(make_model(), checkpointing)
        balancer = build_balancer(name, NAMES, mode=mode, task_chunk=task_chunk)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, targets in make_batches():
            step(balancer, model, optimizer, x, targets, "outputs")
        runs[task_chunk] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(runs[2], runs[None], rtol=1e-5, atol=1e-5)
