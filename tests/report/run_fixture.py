"""A short real compare run for the report tests: ``run_grid`` on tiny generated data.

Three correlated regression tasks (the built-in synthetic generator), 2 epochs, 2 seeds,
equal weighting and uncertainty weighting (whose learned weights change every epoch) on
hard sharing, gradient conflict and affinity tracked, TAG groups for 2 networks.
"""
from __future__ import annotations

from pathlib import Path

from taskloom.config import parse_config
from taskloom.train.grid import GridSpec, run_grid

CONFIG = {
    "name": "report-fixture",
    "data": {"dataset": "synthetic", "options": {"n": 300, "d": 6, "num_tasks": 3, "correlation": 0.8}},
    "model": {"architecture": "hard", "trunk": {"name": "mlp", "options": {"hidden": [8]}}},
    "optimizer": {"lr": 0.01},
    "train": {"epochs": 2, "batch_size": 64, "num_threads": 1},
    "tracking": {"every": 1},
}
METHODS = ("equal", "uncertainty")
SEEDS = (0, 1)
TASKS = ("y1", "y2", "y3")


def write_fixture_run(path: Path, epochs: int = 2) -> Path:
    """Run the grid into ``path`` (its compare.json, metrics, cells and report.html) and return ``path``."""
    config = parse_config({**CONFIG, "train": {**CONFIG["train"], "epochs": epochs}, "output_dir": str(path.parent)},
                          "the report test's config")
    spec = GridSpec(methods=list(METHODS), architectures=["hard"], seeds=list(SEEDS),
                    measure=["conflict", "affinity"], groups=[2])
    run_grid(config, spec, path)
    return path
