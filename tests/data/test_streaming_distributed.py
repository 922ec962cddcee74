"""A streamed table trained by ``taskloom train CONFIG --nproc 2`` (torchrun, gloo): each rank its own row groups."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import yaml

from taskloom.data.hash_split import hash_split_rows


def test_two_processes_train_a_streamed_table_and_evaluate_every_test_row(tmp_path):
    rng = np.random.default_rng(0)
    n = 1600
    x = rng.normal(size=(n, 3))
    frame = pd.DataFrame({"id": np.arange(n) * 5 + 1, "a": x[:, 0], "b": x[:, 1], "c": x[:, 2],
                          "y": x @ [1.0, -1.0, 0.5] + rng.normal(0, 0.1, n), "z": (x[:, 0] > 0).astype(int)})
    frame.to_parquet(tmp_path / "table.parquet", index=False, row_group_size=200)  # 8 pieces: 4 per rank
    config = {"name": "streamed", "output_dir": str(tmp_path / "runs"),
              "data": {"dataset": "table", "options": {"path": str(tmp_path / "table.parquet")}, "streaming": True,
                       "split": {"key": "id"}, "streaming_options": {"shuffle_buffer": 300, "read_rows": 100}},
              "tasks": [{"name": "y", "kind": "regression", "target": "y"},
                        {"name": "z", "kind": "binary", "target": "z"}],
              "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
              "optimizer": {"name": "adamw", "lr": 0.03},
              "train": {"epochs": 3, "batch_size": 64, "baselines": False}}
    (tmp_path / "streamed.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "taskloom", "train", str(tmp_path / "streamed.yaml"), "--nproc", "2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    test_rows = len(hash_split_rows(frame["id"], n, 0.1, 0.2, 0)["test"])
    for task in ("y", "z"):
        assert results["test"][task]["labelled"] == test_rows
        assert all(math.isfinite(v) for v in results["test"][task].values() if isinstance(v, float))
    assert results["test"]["z"]["accuracy"] > 0.8  # the label is the sign of a feature: learnt from both shards
