"""From a config to trained models: weights and conditions reach the loss; the comparison selects fairly."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from taskloom.config import parse_config
from taskloom.train.checkpoint import load_checkpoint
from taskloom.train.runner import build_trainer, load_data, run_comparison


def _bce(z: float, y: float) -> float:
    """Binary cross-entropy of one logit, by its definition."""
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


@pytest.fixture
def shop(tmp_path):
    rng = np.random.default_rng(1)
    n = 160
    frame = pd.DataFrame({"f1": rng.normal(size=n), "f2": rng.normal(size=n)})
    frame["click"] = (frame.f1 + 0.5 * rng.normal(size=n) > 0).astype(float)
    frame.loc[rng.random(n) < 0.1, "click"] = np.nan
    frame["buy"] = (frame.f2 + 0.5 * rng.normal(size=n) > 0).astype(float)
    frame.loc[rng.random(n) < 0.2, "buy"] = np.nan
    frame["w"] = rng.uniform(0.5, 2.0, n)
    frame.loc[frame.buy.isna(), "w"] = np.nan  # no label, no weight: allowed
    frame["spend"] = frame.f1 - frame.f2 + 0.1 * rng.normal(size=n)
    frame.loc[rng.random(n) < 0.3, "spend"] = np.nan
    path = tmp_path / "shop.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _config(path, tmp_path, **extra):
    raw = {
        "name": "shop",
        "data": {"dataset": "table", "options": {"path": str(path), "features": ["f1", "f2"]}},
        "tasks": [
            {"name": "click", "kind": "binary", "target": "click"},
            {"name": "buy", "kind": "binary", "target": "buy", "class_weights": [1.0, 3.0], "sample_weight": "w",
             "only_where": {"task": "click", "equals": 1}},
            {"name": "spend", "kind": "regression", "target": "spend"},
        ],
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
        "train": {"epochs": 2, "batch_size": 32},
        "output_dir": str(tmp_path / "runs"),
    }
    raw.update(extra)
    return parse_config(raw)


def test_class_weights_sample_weights_and_conditions_from_a_config_reach_the_loss(shop, tmp_path):
    path, frame = shop
    config = _config(path, tmp_path)
    splits = load_data(config)
    trainer = build_trainer(config, splits.tasks, splits, None)
    rows = splits.info["rows"]["train"]
    batch = splits.train.batch(torch.arange(len(rows)))
    with torch.no_grad():
        outputs = {n: o.reshape(len(rows)).tolist() for n, o in trainer.model(batch.inputs).items()}
    losses = trainer.train_step(batch)
    click, buy, spend, w = (frame[c].to_numpy()[rows] for c in ("click", "buy", "spend", "w"))
    terms = [(w[i] * (3.0 if buy[i] == 1 else 1.0), _bce(outputs["buy"][i], buy[i]))
             for i in range(len(rows)) if not np.isnan(buy[i]) and click[i] == 1]
    expected_buy = sum(a * b for a, b in terms) / sum(a for a, _ in terms)
    clicks = [_bce(outputs["click"][i], click[i]) for i in range(len(rows)) if not np.isnan(click[i])]
    spends = [(outputs["spend"][i] - spend[i]) ** 2 for i in range(len(rows)) if not np.isnan(spend[i])]
    assert len(terms) < len(rows) and len(clicks) < len(rows)  # the masks matter in this batch
    assert math.isclose(losses["buy"].item(), expected_buy, rel_tol=1e-5)
    assert math.isclose(losses["click"].item(), sum(clicks) / len(clicks), rel_tol=1e-5)
    assert math.isclose(losses["spend"].item(), sum(spends) / len(spends), rel_tol=1e-5)


def _best_validation(run_dir, name, metric, higher_is_better):
    """A single-task model's best validation value of its main metric, read from its metrics.jsonl."""
    lines = (run_dir / "single" / name / "seed0" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    values = [r["val"][name][metric] for r in records]
    return max(values) if higher_is_better else min(values)


def test_the_multitask_model_is_selected_against_the_single_task_models(shop, tmp_path):
    path, _ = shop
    config = _config(path, tmp_path)
    comparison = run_comparison(config, tmp_path / "run")
    run_dir = tmp_path / "run"
    expected = {name: _best_validation(run_dir, name, row["metric"], row["higher_is_better"])
                for name, row in comparison["tasks"].items()}
    assert comparison["cells"]["hard+equal/seed0"]["selection_baselines"] == expected
    multi = run_dir / "hard+equal" / "seed0"
    assert load_checkpoint(multi / "checkpoints" / "last.pt")["selection_baselines"] == expected
    first = json.loads((multi / "metrics.jsonl").read_text().splitlines()[0])
    changes = [(1 if row["higher_is_better"] else -1) * (first["val"][n][row["metric"]] - expected[n]) / expected[n]
               for n, row in comparison["tasks"].items()]
    assert math.isclose(first["score"], 100 * sum(changes) / len(changes), rel_tol=1e-9)


def test_baselines_given_in_the_config_take_precedence(shop, tmp_path):
    path, _ = shop
    config = _config(path, tmp_path, selection={"baselines": {"click": 0.5}},
                     train={"epochs": 1, "batch_size": 32})
    comparison = run_comparison(config, tmp_path / "run")
    chosen = comparison["cells"]["hard+equal/seed0"]["selection_baselines"]
    assert chosen["click"] == 0.5
    spend = comparison["tasks"]["spend"]
    assert chosen["spend"] == _best_validation(tmp_path / "run", "spend", "mse", False)
    assert spend["metric"] == "mse"
