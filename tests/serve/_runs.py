"""Small trained runs for the serving tests: a generated shop table with every row-wise task kind."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from taskloom.config import parse_config
from taskloom.train.runner import run_training

FEATURES = ["age", "income", "channel"]


def shop_frame(n: int = 360, seed: int = 0) -> pd.DataFrame:
    """Rows with an id, two numeric and one categorical feature (some empty), and four target columns."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "customer": [f"c{i:04d}" for i in range(n)],
        "age": rng.integers(18, 80, n).astype(float),
        "income": rng.normal(50.0, 15.0, n),
        "channel": rng.choice(["web", "store", "phone"], n),
    })
    frame.loc[rng.random(n) < 0.05, "channel"] = np.nan  # its own category, <missing>
    score = (frame.age - 45) / 15 + (frame.income - 50) / 15 + (frame.channel == "web")
    frame["churn"] = np.where(score + 0.5 * rng.normal(size=n) > 0.5, "yes", "no")
    frame["segment"] = np.select([frame.income < 40, frame.income < 60], ["low", "mid"], "high")
    frame["spend"] = 3.0 * frame.income + 0.5 * frame.age + rng.normal(size=n)
    frame.loc[rng.random(n) < 0.2, "spend"] = np.nan  # missing labels
    return frame


def shop_config(path: Path, output: Path, architecture: str = "hard", options: dict[str, Any] | None = None,
                epochs: int = 2, threshold: Any = 0.5) -> dict[str, Any]:
    return {
        "name": f"shop-{architecture}",
        "data": {"dataset": "table", "options": {"path": str(path), "features": FEATURES}, "val_fraction": 0.2,
                 "test_fraction": 0.2},
        "tasks": [
            {"name": "churn", "kind": "binary", "target": "churn", "decision_threshold": threshold},
            {"name": "segment", "kind": "multiclass", "target": "segment", "num_outputs": 3},
            {"name": "spend", "kind": "regression", "target": "spend"},
        ],
        "model": {"architecture": architecture, "trunk": {"name": "mlp", "options": {"hidden": [16, 8]}},
                  "options": options or {}},
        "train": {"epochs": epochs, "batch_size": 64, "seed": 0},
        "output_dir": str(output),
    }


def train_shop(directory: Path, architecture: str = "hard", options: dict[str, Any] | None = None,
               epochs: int = 2, threshold: Any = 0.5) -> tuple[Path, pd.DataFrame, Any]:
    """Write the table, train it; returns (run directory, the table, the config)."""
    directory.mkdir(parents=True, exist_ok=True)
    frame = shop_frame()
    path = directory / "shop.csv"
    frame.to_csv(path, index=False)
    config = parse_config(shop_config(path, directory / "runs", architecture, options, epochs, threshold))
    result = run_training(config)
    return Path(result["run_dir"]), frame, config
