"""Several data sets in one config: each source labels some tasks, a sampler mixes them (UberNet's setting)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from taskloom.config import ConfigError, parse_config
from taskloom.train.runner import load_data, run_training, training_data


def _table(path, seed: int, target: str, n: int = 240):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"f1": rng.normal(size=n), "f2": rng.normal(size=n)})
    frame[target] = (frame.f1 - frame.f2 > 0).astype(float) if target == "click" else 2 * frame.f2
    frame.to_csv(path, index=False)
    return str(path)


def _synthetic_sources(tmp_path, **mixing):
    return {
        "name": "two-sources",
        "data": {
            "sources": [
                {"name": "first", "dataset": "synthetic", "options": {"n": 400, "d": 8}, "tasks": ["y1"]},
                {"name": "second", "dataset": "synthetic", "options": {"n": 200, "d": 8, "correlation": 0.2}, "tasks": ["y2"]},
            ],
            "mixing": mixing,
        },
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [16]}}},
        "train": {"epochs": 2, "batch_size": 32},
        "output_dir": str(tmp_path / "runs"),
    }


def test_each_source_labels_only_its_own_tasks(tmp_path):
    splits = load_data(parse_config(_synthetic_sources(tmp_path)))
    assert [t.name for t in splits.tasks] == ["y1", "y2"]
    first, second = splits.info["train_sources"]["first"], splits.info["train_sources"]["second"]
    assert first.masks["y1"].all() and not first.masks["y2"].any()
    assert second.masks["y2"].all() and not second.masks["y1"].any()
    assert len(splits.train) == len(first) + len(second)
    assert int(splits.test.masks["y1"].sum()) == 80 and int(splits.test.masks["y2"].sum()) == 40


def test_homogeneous_batches_hold_one_source_and_given_probabilities_are_followed(tmp_path):
    config = parse_config(_synthetic_sources(tmp_path, strategy="given", probabilities={"first": 0.9, "second": 0.1}))
    splits = load_data(config)
    loader = training_data(config, splits, ["y1", "y2"])
    loader.set_epoch(1)
    batches = list(loader)
    from_first = 0
    for batch in batches:
        y1 = batch.masks.get("y1")
        labelled_y1 = len(batch) if y1 is None else int(y1.sum())
        assert labelled_y1 in (0, len(batch))  # one source per batch
        from_first += labelled_y1 > 0
    assert from_first / len(batches) > 0.7


def test_a_single_task_baseline_draws_only_from_sources_with_its_labels(tmp_path):
    config = parse_config(_synthetic_sources(tmp_path))
    splits = load_data(config)
    loader = training_data(config, splits, ["y2"])
    assert list(loader.sources) == ["second"]


def test_training_on_two_sources_with_baselines_reports_both_tasks(tmp_path):
    raw = _synthetic_sources(tmp_path, strategy="temperature", temperature=2.0)
    raw["train"]["baselines"] = True
    comparison = run_training(parse_config(raw))
    assert set(comparison["tasks"]) == {"y1", "y2"}
    assert all(np.isfinite(value) for value in comparison["variants"]["hard+equal"]["values"]["0"].values())
    records = [json.loads(line) for line in open(f"{comparison['run_dir']}/metrics.jsonl")]
    assert {r["model"] for r in records} == {"single/y1", "single/y2", "hard+equal"}


def test_table_sources_take_their_tasks_from_the_config(tmp_path):
    raw = {
        "data": {"sources": [
            {"name": "clicks", "dataset": "table", "options": {"path": _table(tmp_path / "a.csv", 0, "click")}},
            {"name": "spend", "dataset": "table", "options": {"path": _table(tmp_path / "b.csv", 1, "amount")}},
        ]},
        "tasks": [
            {"name": "click", "kind": "binary", "target": "click", "source": "clicks"},
            {"name": "amount", "kind": "regression", "target": "amount", "source": "spend"},
        ],
    }
    splits = load_data(parse_config(raw))
    assert [t.name for t in splits.tasks] == ["click", "amount"]
    assert splits.info["sources"] == {"clicks": 168, "spend": 168}
    raw["tasks"][1]["target"] = "missing_column"
    with pytest.raises(ConfigError, match=r"tasks\[1\]\.target: column 'missing_column' is not in the table"):
        load_data(parse_config(raw))


@pytest.mark.parametrize("change, message", [
    (lambda r: r["data"].update(options={"n": 5}), "options belongs to dataset"),
    (lambda r: r["data"]["sources"][1].update(name="first"), "source names must be unique"),
    (lambda r: r["data"].update(mixing={"strategy": "given", "probabilities": {"first": 1.0}}),
     "one probability per source"),
    (lambda r: r["data"]["sources"][0].update(tasks=["y9"]), r"data.sources\[0\].tasks: \['y9'\] are not tasks"),
])
def test_bad_sources_are_refused_with_the_field(tmp_path, change, message):
    raw = _synthetic_sources(tmp_path)
    change(raw)
    with pytest.raises(ConfigError, match=message):
        load_data(parse_config(raw))


def test_sources_with_different_input_shapes_are_refused(tmp_path):
    raw = _synthetic_sources(tmp_path)
    raw["data"]["sources"][1]["options"]["d"] = 9
    with pytest.raises(ConfigError, match="one input shape"):
        load_data(parse_config(raw))
