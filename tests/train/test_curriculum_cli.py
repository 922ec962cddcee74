"""Curricula through ``taskloom train``, ``run`` and ``compare`` on small generated data."""
import json
from pathlib import Path

import pytest
import yaml

from taskloom.cli import main


def _config(tmp_path: Path, curriculum: dict, epochs: int = 2) -> Path:
    config = {
        "name": "cur",
        "data": {"dataset": "synthetic", "options": {"n": 200, "d": 4}},
        "tasks": [{"name": "a", "kind": "regression", "target": "y1"},
                  {"name": "b", "kind": "regression", "target": "y2"}],
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
        "train": {"epochs": epochs, "batch_size": 64},
        "output_dir": str(tmp_path / "runs"),
        "curriculum": curriculum,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _multitask_records(tmp_path: Path) -> list[dict]:
    """The metrics.jsonl records of the multi-task model (the only one with a curriculum)."""
    found = []
    for path in sorted((tmp_path / "runs").rglob("metrics.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        if records and "curriculum" in records[0]:
            found.append(records)
    assert found, "no metrics.jsonl with curriculum records"
    return found[0]


@pytest.mark.parametrize("command, curriculum, expected", [
    (["train"], {"mode": "order", "order": ["b", "a"], "every": 1}, [["b"], ["a", "b"]]),
    (["run"], {"mode": "sampling", "schedule": {"a": [0.0, 1.0]}}, [0, 4]),
    (["compare", "--seeds", "1"], {"mode": "sequential", "order": ["b", "a"], "strength": 0.1,
                                   "epochs_per_task": 1}, ["b", "a"]),
])
def test_each_command_trains_the_multitask_model_with_its_curriculum(tmp_path, capsys, command, curriculum,
                                                                     expected):
    assert main([*command, str(_config(tmp_path, curriculum))]) == 0
    records = _multitask_records(tmp_path)
    assert len(records) == 2
    if curriculum["mode"] == "order":
        assert [r["curriculum"]["active"] for r in records] == expected
    elif curriculum["mode"] == "sampling":  # 140 training rows: 3 batches; a's probability goes 0 -> 1
        assert [r["curriculum"]["included"]["a"] for r in records] == [0, records[1]["curriculum"]["steps"]]
        assert [r["curriculum"]["probabilities"]["a"] for r in records] == [0.0, 1.0]
    else:
        assert [r["curriculum"]["task"] for r in records] == expected


def test_an_unknown_task_in_the_curriculum_is_refused_with_its_path(tmp_path, capsys):
    assert main(["train", str(_config(tmp_path, {"mode": "order", "order": ["a", "c"]}))]) == 2
    captured = capsys.readouterr()
    assert "curriculum.order[1]: 'c' is not a task name" in captured.out + captured.err


def test_a_curriculum_over_the_data_sets_own_tasks_is_checked_at_the_start(tmp_path, capsys):
    path = _config(tmp_path, {"mode": "order", "order": ["y2", "y9"]})
    config = yaml.safe_load(path.read_text())
    del config["tasks"]  # the synthetic data set's tasks y1, y2
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 2
    captured = capsys.readouterr()
    assert "curriculum.order[1]: 'y9' is not a task name" in captured.out + captured.err
