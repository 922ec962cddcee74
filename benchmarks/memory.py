"""Peak memory and milliseconds of one training step, every gradient method x mode x engine, ratio to EW.

The model, data and step are those of ``balancing_speed.py`` (an MLP 64-256-256 trunk with K
regression heads, batch 256, AdamW, the trainer's forward path); K = 40 and K = 4 by default.
Each gradient method runs with the full engine (all K per-task gradients held; ``engine: jacobian``),
in parameter mode the Gramian-based ones also with the layer Gramian engine (``engine: gramian``), and with the
task-chunked one (``balancing.options.task_chunk`` in ``--chunks``). Memory: two warm-up steps
(so the optimizer's state exists), then the peak of the bytes allocated during one step beyond
those live before it: on CPU from ``torch.profiler``'s memory events (allocations and frees,
summed in time order), on CUDA from ``torch.cuda.max_memory_allocated`` after a reset, minus
the bytes allocated before the step. Time: the median of ``--steps`` steps, unprofiled, in the
same run. ``ratio`` and ``ms_ratio`` are to equal weighting's. Prints JSON.

    OMP_NUM_THREADS=1 python benchmarks/memory.py                  # CPU, K = 40 and 4, chunks 1 and 4
    python benchmarks/memory.py --device cuda --tasks 40 --chunks 1 4 8

``--checkpointing`` turns on activation checkpointing of the trunk (``model.checkpointing``) for
every case, equal weighting included.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from balancing_speed import make_problem, taskloom_step  # noqa: E402

from taskloom.balancing import BALANCERS, build_balancer  # noqa: E402
from taskloom.balancing.gradient import GradientBalancer  # noqa: E402
from taskloom.sharing.checkpointing import enable_checkpointing  # noqa: E402

MB = 1024 * 1024


def peak_bytes_cpu(step: Callable[[Any], None], batch: Any) -> int:
    """The most bytes allocated at once during ``step(batch)`` beyond those live before it (profiler memory events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recorded:
        step(batch)
    events = sorted((e for e in recorded.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def peak_bytes_cuda(step: Callable[[Any], None], batch: Any) -> int:
    """The CUDA allocator's peak during ``step(batch)`` minus the bytes allocated before it."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(batch)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def milliseconds(step: Callable[[Any], None], batches: list[Any], steps: int, device: str) -> float:
    """Median wall time of ``steps`` steps, in ms."""
    times = []
    for index in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step(batches[index % len(batches)])
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(make_step: Callable[[], Callable[[Any], None]], batches: list[Any], device: str,
            steps: int) -> dict[str, float]:
    """Peak MB of one step after two warm-up steps, then the median ms of ``steps`` more (same step function)."""
    step = make_step()
    for batch in batches[:2]:
        step(batch)
    peak = peak_bytes_cuda(step, batches[2]) if device == "cuda" else peak_bytes_cpu(step, batches[2])
    return {"mb": peak / MB, "ms": milliseconds(step, batches, steps, device)}


def gradient_cases(methods: list[str] | None = None) -> list[tuple[str, str]]:
    """Every registered gradient method (or those in ``methods``) in each mode it is defined for."""
    cases = []
    for name in BALANCERS:
        kind = BALANCERS.get(name)
        if issubclass(kind, GradientBalancer) and (methods is None or name in methods):
            cases += [(name, mode) for mode in ("parameters", "representation") if mode in kind.modes]
    return cases


def run_setting(k: int, chunks: list[int], device: str, batch: int, steps: int,
                methods: list[str] | None = None, checkpointing: bool = False) -> dict[str, Any]:
    """Every engine of every gradient method x mode at K = ``k``, with equal weighting's figures and the ratios."""
    names, build, loss_fn, batches = make_problem("mlp", k, batch, device)

    def factory(name: str, **options: Any) -> Callable[[], Callable[[Any], None]]:
        def make_step() -> Callable[[Any], None]:
            model = enable_checkpointing(build()) if checkpointing else build()
            balancer = build_balancer(name, names, **options).to(device)
            optimizer = torch.optim.AdamW(list(model.parameters()) + list(balancer.parameters()), lr=1e-3)
            return taskloom_step(model, balancer, optimizer, names, loss_fn)
        return make_step

    equal = measure(factory("equal"), batches, device, steps)
    rows: dict[str, Any] = {"equal": {"mb": round(equal["mb"], 3), "ms": round(equal["ms"], 2)}}
    for name, mode in gradient_cases(methods):
        engines: dict[str, Any] = {}
        kind = BALANCERS.get(name)
        layer = mode == "parameters" and kind.weights_from_gram
        for task_chunk in [None, *(["layer_gramian"] if layer else []), *chunks]:
            if task_chunk is None:
                key, options = "full", {"engine": "jacobian"}
            elif task_chunk == "layer_gramian":
                key, options = "layer_gramian", {"engine": "gramian"}
            else:
                key, options = f"task_chunk={task_chunk}", {"task_chunk": task_chunk}
            try:
                figures = measure(factory(name, mode=mode, **options), batches, device, steps)
            except ValueError as error:  # a method that refuses the engine (DB-MTL) is reported with why
                engines[key] = {"refused": str(error)}
                continue
            engines[key] = {"mb": round(figures["mb"], 3), "ratio": round(figures["mb"] / equal["mb"], 2),
                            "ms": round(figures["ms"], 2), "ms_ratio": round(figures["ms"] / equal["ms"], 2)}
        rows.setdefault(name, {})[mode] = engines
    return {"tasks": k, "batch": batch, "checkpointing": checkpointing, "methods": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--tasks", type=int, nargs="+", default=[40, 4], help="values of K (default: 40 4)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 4], help="task_chunk values (default: 1 4)")
    parser.add_argument("--methods", nargs="+", default=None, help="gradient methods (default: every one)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--checkpointing", action="store_true", help="model.checkpointing: recompute the trunk")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    unknown = [m for m in args.methods or [] if m not in dict(gradient_cases())]
    if unknown:
        parser.error(f"--methods: {unknown} are not gradient methods; known: {sorted(dict(gradient_cases()))}")
    settings = [run_setting(k, args.chunks, args.device, args.batch, args.steps, args.methods, args.checkpointing)
                for k in args.tasks]
    print(json.dumps({"device": args.device, "torch": torch.__version__, "machine": platform.machine(),
                      "threads": torch.get_num_threads(), "settings": settings}, indent=1))


if __name__ == "__main__":
    main()
