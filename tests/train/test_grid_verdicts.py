"""The grid's verdicts end to end: undefined tasks left out of delta-m, references, splits, failed runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_output import run_cli

from taskloom.train.trainer import Trainer


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(1)
    n = 400
    frame = pd.DataFrame({"f1": rng.normal(size=n), "f2": rng.normal(size=n)})
    frame["click"] = (frame.f1 + 0.5 * rng.normal(size=n) > 0).astype(float)
    frame["level"] = 1.0  # constant: no split can measure it
    frame["rare"] = 0.0
    frame.loc[:3, "rare"] = 1.0  # 4 positives in all: AUROC needs 5 of each class in the test split
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def _config(tmp_path, table, **extra):
    config = {"name": "t", "data": {"dataset": "table", "options": {"path": str(table)}},
              "tasks": [{"name": "click", "kind": "binary", "target": "click"},
                        {"name": "level", "kind": "regression", "target": "level"},
                        {"name": "rare", "kind": "binary", "target": "rare"}],
              "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
              "train": {"epochs": 2, "batch_size": 64, "num_threads": 1}, "output_dir": str(tmp_path / "runs")}
    config.update(extra)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _main(args):
    return run_cli(args, width=80)


def test_undefined_tasks_are_named_and_left_out_of_delta_m(tmp_path, table, caplog):
    code, out = _main(["compare", str(_config(tmp_path, table)), "--seeds", "2"])
    assert code == 0
    run_dir = Path(out.split("run directory:")[1].split()[0])
    compare = json.loads((run_dir / "compare.json").read_text())
    test = compare["evaluation"]["test"]
    assert test["level"]["defined"] is False and "zero variance" in test["level"]["reason"]
    assert test["rare"]["defined"] is False and "AUROC needs at least 5" in test["rare"]["reason"]
    assert test["click"]["defined"] is True
    variant = compare["analysis"]["variants"]["hard+equal"]
    assert variant["tasks"]["level"]["verdict"] == "undefined"
    assert variant["delta_m"]["tasks"] == ["click"] and set(variant["delta_m"]["left_out"]) == {"level", "rare"}
    assert variant["delta_m"]["mean"] == pytest.approx(variant["tasks"]["click"]["relative_change"])
    assert all(row["level"] is None for row in compare["variants"]["hard+equal"]["values"].values())
    assert "delta-m of hard+equal leaves out level" in out and "task 'level'" in caplog.text
    tables = out.split("run directory:")[0]  # the path itself is printed whole, to be copied
    assert max(len(line) for line in tables.splitlines()) <= 80  # readable at 80 columns
    trivial = compare["references"]["click"]["trivial"]
    assert trivial["auroc"] == 0.5 and compare["references"]["click"]["linear"]["auroc"] > 0.8
    csv_text = (run_dir / "compare.csv").read_text()
    assert "undefined" in csv_text and "trivial" in csv_text.splitlines()[0]


def test_several_splits_are_the_unit_of_replication(tmp_path, table):
    code, out = _main(["compare", str(_config(tmp_path, table)), "--seeds", "1", "--splits", "3"])
    assert code == 0
    run_dir = Path(out.split("run directory:")[1].split()[0])
    compare = json.loads((run_dir / "compare.json").read_text())
    assert sorted(compare["units"]) == ["split0-seed0", "split1-seed0", "split2-seed0"]
    assert compare["replication"] == "splits x seeds"
    row = compare["analysis"]["variants"]["hard+equal"]["tasks"]["click"]
    assert "Nadeau & Bengio" in row["test"] and row["covers"].startswith("3 splits")
    rows = [json.loads((run_dir / f"split{j}" / "single" / "click" / "seed0" / "results.json").read_text())
            for j in range(3)]
    assert len({r["test"]["click"]["auroc"] for r in rows}) == 3  # each split has its own test rows


def test_a_run_that_fails_before_any_model_finished_leaves_nothing(tmp_path, table, monkeypatch):
    def broken(self, *args, **kwargs):
        raise ValueError("labels broke")

    monkeypatch.setattr(Trainer, "fit", broken)
    code, out = _main(["train", str(_config(tmp_path, table))])
    assert code == 2 and "labels broke" in out
    assert not any((tmp_path / "runs").iterdir())


def test_a_run_that_fails_later_is_marked_failed_and_resumable(tmp_path, table, monkeypatch):
    original, calls = Trainer.fit, []

    def fails_second(self, *args, **kwargs):
        calls.append(self.model_name)
        if len(calls) == 2:
            raise ValueError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", fails_second)
    code, _ = _main(["run", str(_config(tmp_path, table))])
    assert code == 2
    (run_dir,) = (tmp_path / "runs").iterdir()
    failed = json.loads((run_dir / "failed.json").read_text())
    assert "disk full" in failed["error"] and "--resume" in failed["resume"]
    monkeypatch.setattr(Trainer, "fit", original)
    code, _ = _main(["run", "--resume", str(run_dir)])
    assert code == 0 and not (run_dir / "failed.json").exists() and (run_dir / "compare.json").is_file()


def test_an_auxiliary_task_is_recorded_and_left_out_of_delta_m(tmp_path, table):
    config = _config(tmp_path, table, tasks=[{"name": "click", "kind": "binary", "target": "click"},
                                             {"name": "f2hat", "kind": "regression", "target": "f2",
                                              "role": "auxiliary"}])
    code, out = _main(["compare", str(config), "--seeds", "2"])
    assert code == 0
    compare = json.loads((Path(out.split("run directory:")[1].split()[0]) / "compare.json").read_text())
    assert compare["tasks"]["f2hat"]["role"] == "auxiliary" and compare["tasks"]["click"]["role"] == "main"
    variant = compare["analysis"]["variants"]["hard+equal"]
    assert variant["tasks"]["f2hat"]["role"] == "auxiliary"
    assert variant["delta_m"]["tasks"] == ["click"] and variant["delta_m"]["left_out"]["f2hat"] == "auxiliary task"
