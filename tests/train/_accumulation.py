"""Builders shared by the accumulation tests, and their data-parallel worker (spawned processes import it)."""
from __future__ import annotations

import torch
from torch import nn

from taskloom import MultiTaskDataset, Task
from taskloom.balancing import build_balancer
from taskloom.sharing.hard import MultiTaskModel
from taskloom.train.trainer import Trainer
from taskloom.trunks import MLP
from train._ddp_equivalence import OPTIONS

ROWS, MICRO = 24, 8
TOLERANCE = 1e-5


def make_data() -> tuple[MultiTaskDataset, list[Task]]:
    """24 rows, three tasks; the micro-batches of 8 rows hold different labelled counts (one none)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, 6, generator=generator)
    targets = {"sign": (x[:, 0] > 0).float(), "quadrant": (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long(),
               "level": 2 * x[:, 0] - x[:, 1]}
    masks = {"sign": torch.arange(ROWS) % 3 != 0,  # 5, 5, 6 labelled rows in the micro-batches
             "quadrant": torch.arange(ROWS) < 19,  # 8, 8, 3
             "level": torch.arange(ROWS) >= 10}  # 0, 6, 8
    tasks = [Task("sign", "binary"), Task("quadrant", "multiclass", 4), Task("level", "regression")]
    return MultiTaskDataset(x, targets, masks), tasks


def make_trainer(name: str, mode: str | None, tasks: list[Task], accumulate: int = 1, **options) -> Trainer:
    torch.manual_seed(0)
    heads = {"sign": nn.Linear(16, 1), "quadrant": nn.Linear(16, 4), "level": nn.Linear(16, 1)}
    model = MultiTaskModel(MLP(6, hidden=(16, 16)), heads=heads)
    method_options = dict(OPTIONS.get(name, {}))
    if mode is not None:
        method_options["mode"] = mode
    balancer = build_balancer(name, [t.name for t in tasks], **method_options)
    return Trainer(model, tasks, balancer, optimizer="sgd", lr=0.05, momentum=0.0, batch_size=MICRO,
                   accumulate=accumulate, **options)


def flat_parameters(trainer: Trainer) -> torch.Tensor:
    tensors = list(trainer.model.parameters()) + list(trainer.balancer.parameters())
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def key_of(name: str, mode: str | None) -> str:
    return name if mode is None else f"{name}/{mode}"


#: one method of each kind: loss level with state and own parameters, parameter and representation mode
DATA_PARALLEL_CASES = [("uncertainty", None), ("famo", None), ("gradnorm", None), ("pcgrad", "parameters"),
                       ("dbmtl", "parameters"), ("mgda", "representation"), ("upgrad", "representation")]


def data_parallel_table(communicator) -> dict:
    """Per case, the largest relative difference after 2 steps: 2 ranks accumulating 3 micro-batches (4 rows of
    each on a rank) vs one process on the whole 24-row batch."""
    from taskloom.train.distributed import shard_batch

    data, tasks = make_data()
    everything = data.batch(torch.arange(ROWS))
    micro = [shard_batch(data.batch(torch.arange(start, start + MICRO)), communicator.rank, communicator.world_size)
             for start in range(0, ROWS, MICRO)]
    table = {}
    for name, mode in DATA_PARALLEL_CASES:
        ranked = make_trainer(name, mode, tasks, accumulate=3, communicator=communicator)
        single = make_trainer(name, mode, tasks)
        for _ in range(2):
            ranked.train_step(micro)
            single.train_step(everything)
        expected = flat_parameters(single)
        table[key_of(name, mode)] = ((flat_parameters(ranked) - expected).abs().max() / expected.abs().max()).item()
    return table


def spawned_rank(rank: int, world_size: int, rendezvous: str, out: str) -> None:
    from train._ddp_equivalence import run_rank

    run_rank(rank, world_size, rendezvous, out, data_parallel_table)
