"""Test MSE of the hard-sharing model on synthetic data (3 regression tasks, correlation 0.8), one seed,
with no curriculum and with each curriculum mode, 12 epochs of training in every case except the rows
ending in 12x3 (12 epochs per task, 36 in all). The sequential mode answers each task with its own
stage's model (keep: per_task) unless the name ends in _shared.

Prints JSON: per configuration, each task's test MSE and their mean.
Run: PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/curricula.py
"""
import json
import logging
import tempfile

from taskloom.config import parse_config
from taskloom.train.runner import run_training

logging.disable(logging.INFO)
CURRICULA = {
    "none": None,
    "order": {"mode": "order", "order": ["y1", "y2", "y3"], "every": 2},
    "sampling": {"mode": "sampling", "schedule": {"y2": [0.2, 1.0], "y3": [0.2, 1.0]}},
    "sequential_auto_0.01": {"mode": "sequential", "order": "auto", "strength": 0.01, "epochs_per_task": 4},
    "sequential_auto_1": {"mode": "sequential", "order": "auto", "strength": 1.0, "epochs_per_task": 4},
    "sequential_fixed_1": {"mode": "sequential", "order": ["y1", "y2", "y3"], "strength": 1.0, "epochs_per_task": 4},
    "sequential_fixed_1_shared": {"mode": "sequential", "order": ["y1", "y2", "y3"], "strength": 1.0,
                                  "epochs_per_task": 4, "keep": "shared"},
    "sequential_fixed_0.01_12x3": {"mode": "sequential", "order": ["y1", "y2", "y3"], "strength": 0.01,
                                   "epochs_per_task": 12},
    "sequential_fixed_0.01_12x3_shared": {"mode": "sequential", "order": ["y1", "y2", "y3"], "strength": 0.01,
                                          "epochs_per_task": 12, "keep": "shared"},
}
out = {}
for name, curriculum in CURRICULA.items():
    raw = {"name": name, "output_dir": tempfile.mkdtemp(),
           "data": {"dataset": "synthetic", "options": {"n": 3000, "d": 16, "num_tasks": 3, "correlation": 0.8}},
           "model": {"trunk": {"name": "mlp", "options": {"hidden": [32]}}},
           "train": {"epochs": 12, "batch_size": 64, "seed": 0}}
    if curriculum is not None:
        raw["curriculum"] = curriculum
    test = run_training(parse_config(raw))["cells"]["hard+equal/seed0"]["test"]
    mse = {task: round(metrics["mse"], 4) for task, metrics in test.items()}
    out[name] = {"test_mse": mse, "mean": round(sum(mse.values()) / len(mse), 4)}
print(json.dumps(out))
