"""Data parallelism on CPU (gloo), 2 processes vs 1; prints JSON.

* ``equivalence``: every method x mode, max relative parameter difference after 3 steps (2 ranks vs 1).
* ``bytes``: bytes all-reduced per step (counted by ``Communicator.bytes_reduced``) for EW and each
  gradient method in both modes, K = 4 and 40, on the MLP 64-256-256 of ``balancing_speed.py`` at a
  global batch of 256, with the ratio to EW's bytes; also with ``task_chunk: 4`` (the chunked engine
  all-reduces each recomputed chunk's rows in parameter mode, the K x K Gramian in representation mode).
* ``seconds_per_step``: wall time of one EW step, 2 processes (128 rows each) vs 1 (256 rows), on
  this machine (2 CPU cores shared with other work: not a scaling measurement).

Run: ``PYTHONPATH=src:tests OMP_NUM_THREADS=1 python benchmarks/ddp.py``.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from train._ddp_equivalence import equivalence_table, free_tcp_address, run_rank  # noqa: E402

from taskloom import Task  # noqa: E402
from taskloom.balancing import BALANCERS, build_balancer  # noqa: E402
from taskloom.balancing.gradient import MODES, GradientBalancer  # noqa: E402
from taskloom.data.batch import Batch  # noqa: E402
from taskloom.sharing.hard import MultiTaskModel  # noqa: E402
from taskloom.train import distributed  # noqa: E402
from taskloom.train.trainer import Trainer  # noqa: E402
from taskloom.trunks import MLP  # noqa: E402

BATCH = 256
CHUNK = 4  # the task-chunked engine's variant in the bytes table


def _trainer(method: str, mode: str | None, k: int, communicator, task_chunk: int | None = None) -> Trainer:
    torch.manual_seed(0)
    names = [f"t{i}" for i in range(k)]
    model = MultiTaskModel(MLP(64, (256, 256)), heads={n: nn.Linear(256, 1) for n in names})
    options = {} if mode is None else {"mode": mode}
    if task_chunk is not None:
        options["task_chunk"] = task_chunk
    balancer = build_balancer(method, names, **options)
    return Trainer(model, [Task(n, "regression") for n in names], balancer, optimizer="sgd", lr=0.01,
                   batch_size=BATCH, communicator=communicator)


def _batch(k: int, rank: int, world: int) -> Batch:
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(BATCH, 64, generator=generator), torch.randn(BATCH, k, generator=generator)
    batch = Batch(x, {f"t{i}": y[:, i] for i in range(k)})
    return distributed.shard_batch(batch, rank, world)


def _bytes(communicator) -> dict:
    table = {}
    gradient = [n for n in BALANCERS if issubclass(BALANCERS.get(n), GradientBalancer)]
    for k in (4, 40):
        rows = {}
        methods = [("equal", None, None)] + [(n, m, chunk) for chunk in (None, CHUNK) for n in gradient
                                              for m in MODES if m in BALANCERS.get(n).modes]
        for method, mode, chunk in methods:
            key = method if mode is None else f"{method}/{mode}"
            key += "" if chunk is None else f"/task_chunk={chunk}"
            try:
                trainer = _trainer(method, mode, k, communicator, task_chunk=chunk)
            except ValueError as error:
                rows[key] = {"refused": str(error)}
                continue
            batch = _batch(k, communicator.rank, communicator.world_size)
            trainer.train_step(batch)
            before = communicator.bytes_reduced
            trainer.train_step(batch)
            rows[key] = {"bytes": communicator.bytes_reduced - before}
        ew = rows["equal"]["bytes"]
        for row in rows.values():
            if "bytes" in row:
                row["ratio_to_ew"] = round(row["bytes"] / ew, 3)
        table[f"K={k}"] = rows
    return table


def _seconds(communicator, steps: int = 20) -> float:
    trainer = _trainer("equal", None, 4, communicator)
    batch = _batch(4, 0, 1) if communicator is None else _batch(4, communicator.rank, communicator.world_size)
    for _ in range(3):
        trainer.train_step(batch)
    if communicator is not None:
        communicator.barrier()
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch)
    return (time.perf_counter() - started) / steps


def _measure(communicator: distributed.Communicator) -> dict:
    return {"equivalence": equivalence_table(communicator, steps=3), "bytes": _bytes(communicator),
            "seconds_two_processes": _seconds(communicator)}


def _worker(rank: int, rendezvous: str, out: str) -> None:
    run_rank(rank, 2, rendezvous, out, _measure)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        mp.spawn(_worker, args=(free_tcp_address(), str(out)), nprocs=2, join=True)
        result = json.loads(out.read_text())
    one = _seconds(None)
    two = result.pop("seconds_two_processes")
    result["seconds_per_step"] = {"one_process": one, "two_processes": two, "ratio_two_to_one": two / one,
                                  "note": "2 CPU cores shared with other work; 1 thread per process"}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
