"""What activation checkpointing and gradient accumulation save, and what they cost, on one training step.

For an MLP trunk (``--depth`` blocks of ``--width`` units) with K regression heads, per setting: the
bytes of activations the forward pass keeps for backward (tensors saved by autograd, parameters
excluded; on CUDA also the step's peak allocated memory) and the median milliseconds per step
(a handful of steps: on a shared CPU the times are indicative). Settings: plain; ``model.checkpointing``;
``train.accumulate: 4`` (micro-batches of a quarter of the rows, the same update). Prints JSON.
Run: python benchmarks/memory_saving.py [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from taskloom import MultiTaskDataset, Task
from taskloom.balancing import build_balancer
from taskloom.sharing.hard import MultiTaskModel
from taskloom.train.trainer import Trainer
from taskloom.trunks import MLP


def make_trainer(method: str, tasks: list[Task], args: argparse.Namespace, **options) -> Trainer:
    torch.manual_seed(0)
    model = MultiTaskModel(MLP(args.features, hidden=(args.width,) * args.depth), tasks=tasks)
    extra = {"mode": "parameters"} if method != "equal" else {}
    balancer = build_balancer(method, [t.name for t in tasks], **extra)
    return Trainer(model, tasks, balancer, optimizer="sgd", lr=1e-3, batch_size=args.batch, device=args.device,
                   **options)


def saved_activation_bytes(trainer: Trainer, batches) -> int:
    """Bytes of the distinct non-parameter tensors autograd keeps during the step's forward passes (the largest
    of the micro-batches' when accumulating)."""
    parameters = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
    largest = 0
    for batch in batches if isinstance(batches, list) else [batches]:
        storages: dict[int, int] = {}

        def pack(tensor: torch.Tensor, storages: dict[int, int] = storages) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in parameters:
                storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            outputs = trainer.step_forward(batch.inputs)
        del outputs
        largest = max(largest, sum(storages.values()))
    return largest


def measure(trainer: Trainer, batches, steps: int) -> dict:
    device = trainer.device
    trainer.train_step(batches)  # warm-up
    saved = saved_activation_bytes(trainer, batches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        trainer.train_step(batches)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    result = {"saved_activation_MiB": round(saved / 2**20, 2), "ms_per_step": round(1000 * statistics.median(times), 2)}
    if device.type == "cuda":
        result["peak_allocated_MiB"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.features, generator=generator)
    tasks = [Task(f"t{k}", "regression") for k in range(args.tasks)]
    data = MultiTaskDataset(x, {t.name: torch.randn(args.batch, generator=generator) for t in tasks})
    whole = data.batch(torch.arange(args.batch)).to(torch.device(args.device))
    quarter = args.batch // 4
    micro = [data.batch(torch.arange(i * quarter, (i + 1) * quarter)).to(torch.device(args.device))
             for i in range(4)]
    report: dict = {"device": args.device, "batch": args.batch, "trunk": f"mlp {args.depth} x {args.width}",
                    "tasks": args.tasks, "torch": torch.__version__}
    for method in ("equal", "pcgrad"):
        report[method] = {
            "plain": measure(make_trainer(method, tasks, args), whole, args.steps),
            "checkpointing": measure(make_trainer(method, tasks, args, checkpointing=True), whole, args.steps),
            "accumulate_4": measure(make_trainer(method, tasks, args, accumulate=4), micro, args.steps),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
