"""One step of every balancing method on 2 ranks vs 1 process (used by the data-parallel tests and benchmark)."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskloom import MultiTaskDataset, Task
from taskloom.balancing import BALANCERS, build_balancer
from taskloom.balancing.gradient import MODES, GradientBalancer
from taskloom.sharing.hard import MultiTaskModel
from taskloom.train import distributed
from taskloom.train.distributed import Communicator, shard_batch
from taskloom.train.trainer import Trainer
from taskloom.trunks import MLP

OPTIONS = {"static": {"weights": {"sign": 1.0, "quadrant": 2.0, "level": 0.5}}, "rlw": {"seed": 3}}
ROWS = 24
#: tasks per chunk of the chunked-engine variants (3 tasks: chunks of 2 and 1)
TASK_CHUNK = 2


def cases() -> list[tuple[str, str | None]]:
    """Every registered method: loss-level ones once, gradient ones in each mode they are defined for."""
    found = []
    for name in BALANCERS:
        kind = BALANCERS.get(name)
        if issubclass(kind, GradientBalancer):
            found += [(name, mode) for mode in MODES if mode in kind.modes]
        else:
            found.append((name, None))
    return found


def chunked_cases() -> list[tuple[str, str, int]]:
    """Every gradient method that accepts ``task_chunk``, in each mode, with the task-chunked engine."""
    return [(name, mode, TASK_CHUNK) for name, mode in cases()
            if mode is not None and name not in ("dbmtl", "excessmtl", "moco", "modo")]  # K x P state: they refuse task_chunk


def case_key(name: str, mode: str | None, task_chunk: int | None) -> str:
    """The table's key of a case: ``name``, ``name/mode`` or ``name/mode/task_chunk=B``."""
    key = name if mode is None else f"{name}/{mode}"
    return key if task_chunk is None else f"{key}/task_chunk={task_chunk}"


def make_data() -> tuple[MultiTaskDataset, list[Task]]:
    """24 rows, three tasks; the masks leave rank 0 and rank 1 (rows 0-11, 12-23) different labelled counts."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, 6, generator=generator)
    targets = {"sign": (x[:, 0] > 0).float(), "quadrant": (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long(),
               "level": 2 * x[:, 0] - x[:, 1]}
    masks = {"sign": torch.arange(ROWS) % 3 != 0,  # 8 labelled rows on each rank
             "quadrant": torch.arange(ROWS) < 15,  # 12 on rank 0, 3 on rank 1
             "level": torch.arange(ROWS) >= 10}  # 2 on rank 0, 12 on rank 1
    tasks = [Task("sign", "binary"), Task("quadrant", "multiclass", 4), Task("level", "regression")]
    return MultiTaskDataset(x, targets, masks), tasks


def make_trainer(name: str, mode: str | None, tasks: list[Task], communicator: Communicator | None,
                 task_chunk: int | None = None) -> Trainer:
    torch.manual_seed(0)
    heads = {"sign": nn.Linear(16, 1), "quadrant": nn.Linear(16, 4), "level": nn.Linear(16, 1)}
    model = MultiTaskModel(MLP(6, hidden=(16, 16)), heads=heads)
    options = dict(OPTIONS.get(name, {}))
    if mode is not None:
        options["mode"] = mode
    if task_chunk is not None:
        options["task_chunk"] = task_chunk
    balancer = build_balancer(name, [t.name for t in tasks], **options)
    return Trainer(model, tasks, balancer, optimizer="sgd", lr=0.05, momentum=0.0, batch_size=ROWS,
                   communicator=communicator)


def parameters_after(trainer: Trainer, data: MultiTaskDataset, steps: int,
                     communicator: Communicator | None) -> torch.Tensor:
    """All model and balancer parameters, flattened, after ``steps`` steps on the whole data set as one batch."""
    for step in range(steps):
        batch = data.batch(torch.arange(ROWS))
        if communicator is not None:
            batch = shard_batch(batch, communicator.rank, communicator.world_size)
        trainer.train_step(batch)
    tensors = list(trainer.model.parameters()) + list(trainer.balancer.parameters())
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def equivalence_table(communicator: Communicator, steps: int) -> dict[str, Any]:
    """Per case: the max relative parameter difference (2 ranks vs 1), or the error a refused case raises."""
    data, tasks = make_data()
    table: dict[str, Any] = {}
    for name, mode, task_chunk in [(n, m, None) for n, m in cases()] + chunked_cases():
        key = case_key(name, mode, task_chunk)
        try:
            trainer = make_trainer(name, mode, tasks, communicator, task_chunk)
        except ValueError as error:
            table[key] = {"refused": str(error)}
            continue
        sharded = parameters_after(trainer, data, steps, communicator)
        single = parameters_after(make_trainer(name, mode, tasks, None, task_chunk), data, steps, None)
        difference = ((sharded - single).abs().max() / single.abs().max()).item()
        same_on_ranks = sharded.clone()
        communicator.all_reduce_sum(same_on_ranks)
        spread = ((same_on_ranks / communicator.world_size - sharded).abs().max() / single.abs().max()).item()
        table[key] = {"relative_difference": difference, "rank_spread": spread}
    return table


def run_rank(rank: int, world_size: int, rendezvous: str, out: str, compute: Any) -> None:
    """A spawned rank: join the group, run ``compute(communicator)`` on every rank, rank 0 writes its JSON to ``out``."""
    torch.set_num_threads(1)
    communicator = distributed.start("cpu", init_method=rendezvous, rank=rank, world_size=world_size)
    try:
        result = compute(communicator)
        if rank == 0:
            Path(out).write_text(json.dumps(result))
        communicator.barrier()  # leave the group together: a rank that leaves early aborts the other
    finally:
        distributed.stop()
    distributed.leave_process(0)


def three_step_table(communicator: Any) -> Any:
    return equivalence_table(communicator, steps=3)


def spawned_worker(rank: int, world_size: int, rendezvous: str, out: str) -> None:
    """A spawned rank that computes the equivalence table (rank 0 writes it to ``out`` as JSON)."""
    run_rank(rank, world_size, rendezvous, out, three_step_table)


def free_tcp_address() -> str:
    """A ``tcp://127.0.0.1:PORT`` rendezvous on a port free now (the file store races at teardown)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"
