"""Framework overhead: taskloom's training step against a hand-written PyTorch loop, side by side.

Both train the same hard-sharing model (a LeNet trunk with two 10-class heads, the
MultiMNIST set-up, or an MLP on tabular data) on the same batches with AdamW. Blocks of
steps alternate between the two so that machine noise hits both alike; the JSON gives
the median milliseconds per step of each, and the ratio as the median over rounds of the
two back-to-back blocks' ratio (with its interquartile range). Run: python benchmarks/overhead.py
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from taskloom import MultiTaskDataset, MultiTaskModel, Task
from taskloom.data.dataset import BatchLoader
from taskloom.train.trainer import Trainer
from taskloom.trunks import MLP, LeNet


def make_setup(kind: str, batch: int, device: str):
    generator = torch.Generator().manual_seed(0)
    if kind == "lenet":
        n, shape, trunk = batch * 16, (1, 28, 28), lambda: LeNet(28)
    else:
        n, shape, trunk = batch * 16, (64,), lambda: MLP(64, (256, 256))
    x = torch.rand((n, *shape), generator=generator)
    targets = {"left": torch.randint(0, 10, (n,), generator=generator),
               "right": torch.randint(0, 10, (n,), generator=generator)}
    tasks = [Task("left", "multiclass", 10), Task("right", "multiclass", 10)]
    data = MultiTaskDataset(x, targets)

    def model():
        torch.manual_seed(0)
        return MultiTaskModel(trunk(), tasks=tasks).to(device)

    return data, tasks, model


def taskloom_block(trainer: Trainer, batches) -> float:
    started = time.perf_counter()
    for batch in batches:
        trainer.train_step(batch)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def plain_block(model, optimizer, batches) -> float:
    started = time.perf_counter()
    for batch in batches:
        x, left, right = batch.inputs, batch.targets["left"], batch.targets["right"]
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.cross_entropy(out["left"], left) + F.cross_entropy(out["right"], right)
        loss.backward()
        optimizer.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def measure(kind: str, batch: int, rounds: int, device: str) -> dict:
    data, tasks, make_model = make_setup(kind, batch, device)
    batches = [b.to(device) for b in BatchLoader(data, batch, seed=0)]
    trainer = Trainer(make_model(), tasks, lr=1e-3, device=device, batch_size=batch)
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)  # as the trainer
    taskloom_block(trainer, batches[:4])
    plain_block(model, optimizer, batches[:4])
    ours, theirs = [], []
    for i in range(rounds):
        pair = [("taskloom", lambda: taskloom_block(trainer, batches)), ("plain", lambda: plain_block(model, optimizer, batches))]
        for name, run in (pair if i % 2 == 0 else pair[::-1]):
            (ours if name == "taskloom" else theirs).append(run() / len(batches) * 1000)
    mine, plain = statistics.median(ours), statistics.median(theirs)
    paired = sorted(a / b for a, b in zip(ours, theirs))  # each round's two blocks ran back to back
    ratio = statistics.median(paired)
    quartiles = statistics.quantiles(paired, n=4)
    return {"model": kind, "batch": batch, "steps_per_round": len(batches), "rounds": rounds,
            "taskloom_ms_per_step": round(mine, 3), "plain_pytorch_ms_per_step": round(plain, 3),
            "ratio": round(ratio, 4), "ratio_interquartile": [round(quartiles[0], 4), round(quartiles[2], 4)],
            "overhead_percent": round(100 * (ratio - 1), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [measure("lenet", 128, args.rounds, args.device), measure("mlp", 256, args.rounds, args.device)]
    print(json.dumps({"benchmark": "trainer overhead vs a plain PyTorch loop", "torch": torch.__version__,
                      "device": args.device, "threads": torch.get_num_threads(), "machine": platform.machine(),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
