"""Tracking config: conflict / affinity in metrics.jsonl, TensorBoard and MLflow behind import checks."""
from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest

import torch

from taskloom import MultiTaskDataset, MultiTaskModel, Task
from taskloom.config import ConfigError, parse_config
from taskloom.train import runner
from taskloom.train import timing as timing_module
from taskloom.train import trainer as trainer_module
from taskloom.train.runner import run_training
from taskloom.train.timing import EpochClock
from taskloom.train.tracking import Monitor, scalars
from taskloom.train.trainer import Trainer

BASE = {
    "name": "track",
    "data": {"dataset": "synthetic", "options": {"n": 200, "d": 6, "num_tasks": 3}},
    "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
    "train": {"epochs": 2, "batch_size": 64},
}


def _config(tmp_path: Path, **tracking):
    return parse_config({**BASE, "output_dir": str(tmp_path), "tracking": tracking})


def _records(result) -> list[dict]:
    return [json.loads(line) for line in (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()]


def test_tracking_is_off_by_default(tmp_path):
    assert parse_config(BASE).tracking.measure == []
    records = _records(run_training(_config(tmp_path)))
    assert not any("conflict" in r or "affinity" in r for r in records)


def test_conflict_and_affinity_are_logged_per_epoch(tmp_path):
    records = _records(run_training(_config(tmp_path, measure=["conflict", "affinity"], every=1)))
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        conflict, affinity = record["conflict"], record["affinity"]
        assert set(conflict) == set(affinity) == {"y1", "y2", "y3"}
        assert conflict["y1"]["y1"] == pytest.approx(1.0)
        assert all(-1 <= v <= 1 for row in conflict.values() for v in row.values())
        assert all(isinstance(affinity[a][b], float) for a in affinity for b in affinity if a != b)


def test_measuring_leaves_training_unchanged(tmp_path):
    plain = run_training(_config(tmp_path / "plain"))
    tracked = run_training(_config(tmp_path / "tracked", measure=["conflict", "affinity"], every=1))
    key = "hard+equal/seed0"
    assert plain["cells"][key]["test"] == tracked["cells"][key]["test"]


def test_bad_tracking_fields_are_named(tmp_path):
    with pytest.raises(ConfigError, match="tracking.measure"):
        parse_config({**BASE, "tracking": {"measure": ["gradients"]}})
    with pytest.raises(ConfigError, match="tracking.every"):
        parse_config({**BASE, "tracking": {"every": 0}})


def test_missing_packages_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ConfigError, match="tracking.tensorboard: the tensorboard package is not installed; "
                                          "pip install tensorboard"):
        run_training(_config(tmp_path, tensorboard=True))
    with pytest.raises(ConfigError, match="tracking.mlflow: the mlflow package is not installed; pip install mlflow"):
        run_training(_config(tmp_path, mlflow=True))


def test_the_tracking_extra_names_both_packages():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert sorted(e.split(">")[0] for e in extras["tracking"]) == ["mlflow", "tensorboard"]
    assert not any(e.startswith(("mlflow", "tensorboard")) for e in extras["dev"])


def test_a_model_without_shared_parameters_is_not_tracked_and_says_why_once(tmp_path, caplog):
    config = parse_config({**BASE, "output_dir": str(tmp_path), "model": {**BASE["model"], "architecture": "soft"},
                           "tracking": {"measure": ["conflict", "affinity"], "every": 1}})
    with caplog.at_level(logging.WARNING, logger="taskloom.train.tracking"):
        records = _records(run_training(config))
    warnings = [r for r in caplog.records if r.name == "taskloom.train.tracking"]
    assert len(warnings) == 1 and "SoftSharing has no shared parameters" in warnings[0].getMessage()
    assert [r["epoch"] for r in records] == [1, 2]
    assert all("conflict" not in r and "affinity" not in r and "no shared parameters" in r["tracking_skipped"]
               for r in records)


class Clock:
    """A stand-in for time.perf_counter that moves only when told: seconds counted by hand, nothing timed."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class SlowAnalysis(Monitor):
    """A monitor whose analysis takes 5 clock seconds before every step."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def before_step(self, trainer, batch, step) -> None:
        self.clock.now += 5.0


def test_analysis_time_is_recorded_apart_from_the_epoch_seconds(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock)
    monkeypatch.setattr(timing_module.time, "perf_counter", clock)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=generator)
    tasks = [Task("a", "regression"), Task("b", "regression")]
    data = MultiTaskDataset(x, {"a": x[:, 0], "b": x[:, 1]})

    def train_one_second_per_step(step, steps):
        clock.now += 1.0

    model = MultiTaskModel(torch.nn.Linear(3, 4), tasks=tasks, out_features=4)
    epoch_clock = EpochClock(tmp_path / "seconds.json")
    trainer = Trainer(model, tasks, epochs=2, batch_size=10, run_dir=tmp_path, monitors=[SlowAnalysis(clock)],
                      on_step=train_one_second_per_step, on_epoch_end=epoch_clock)
    epoch_clock.start(trainer.start_epoch)
    trainer.fit(data, data)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:  # 4 steps of 1 s training, each after 5 s of analysis
        assert record["seconds"] == 4.0 and record["analysis_seconds"] == 20.0
    saved = json.loads((tmp_path / "seconds.json").read_text())["epochs"]
    assert saved == {"1": {"train": 4.0, "analysis": 20.0}, "2": {"train": 4.0, "analysis": 20.0}}
    assert epoch_clock.train_seconds == 8.0 and epoch_clock.analysis_seconds == 40.0


def test_a_run_with_tracking_records_its_analysis_time_and_one_without_has_none(tmp_path):
    result = run_training(_config(tmp_path, measure=["affinity"], every=1))
    tracked = _records(result)
    assert [r["epoch"] for r in tracked] == [1, 2]
    assert all(r["analysis_seconds"] > 0 and r["seconds"] > 0 for r in tracked)  # affinity was measured each step
    seconds = json.loads((Path(result["run_dir"]) / "hard+equal" / "seed0" / "seconds.json").read_text())["epochs"]
    assert [seconds[str(r["epoch"])]["analysis"] for r in tracked] == [r["analysis_seconds"] for r in tracked]
    plain = _records(run_training(_config(tmp_path / "plain")))
    assert [r["epoch"] for r in plain] == [1, 2]
    assert not any("analysis_seconds" in r for r in plain)


def test_tensorboard_and_mlflow_get_per_task_scalars(tmp_path, monkeypatch):
    written, logged = [], []

    class Writer:
        def __init__(self, log_dir):
            written.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed",))

    board = types.ModuleType("torch.utils.tensorboard")
    board.SummaryWriter = Writer
    flow = types.ModuleType("mlflow")
    flow.set_tracking_uri = lambda uri: logged.append(("uri", uri))
    flow.start_run = lambda run_name: logged.append(("start", run_name))
    flow.log_params = lambda params: logged.append(("params", params))
    flow.log_metrics = lambda metrics, step: logged.append(("metrics", step, metrics))
    flow.end_run = lambda: logged.append(("end",))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", board)
    monkeypatch.setitem(sys.modules, "mlflow", flow)
    run_training(_config(tmp_path, tensorboard=True, mlflow=True, mlflow_tracking_uri="file:/tmp/x"))
    tags = {entry[0] for entry in written if len(entry) == 3}
    assert {"hard+equal/train_loss/y1", "hard+equal/val/y2/mse", "hard+equal/weights/y3"} <= tags
    assert written[-1] == ("closed",) and written[0][1].endswith("hard+equal/seed0/tensorboard")
    assert [entry[0] for entry in logged] == ["uri", "start", "params", "metrics", "metrics", "end"]
    assert logged[1] == ("start", "track/hard+equal") and "train_loss/y1" in logged[3][2]


def test_scalars_flatten_a_record():
    record = {"model": "m", "epoch": 1, "train_loss": {"a": 1.0}, "val": {"a": {"auroc": 0.5, "acc": None}},
              "weights": {"a": 1}, "score": float("nan"), "lr": 0.1}
    assert scalars(record) == {"train_loss/a": 1.0, "val/a/auroc": 0.5, "weights/a": 1.0, "lr": 0.1}


def test_a_report_failure_is_a_warning_not_a_lost_run(tmp_path, monkeypatch, caplog):
    import taskloom.report

    def broken(run_dir):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(taskloom.report, "write_report", broken)
    with caplog.at_level(logging.WARNING, logger=runner.__name__):
        result = run_training(_config(tmp_path))
    assert (Path(result["run_dir"]) / "compare.json").is_file()
    assert "could not be written (RuntimeError: no fonts)" in caplog.text


def test_training_writes_the_report(tmp_path):
    result = run_training(_config(tmp_path))
    assert (Path(result["run_dir"]) / "report.html").is_file()


def test_affinity_command_reads_a_training_run(tmp_path, capsys):
    from taskloom.cli import main

    result = run_training(_config(tmp_path, measure=["affinity"], every=2))
    assert main(["affinity", result["run_dir"], "--groups", "2"]) == 0
    out = capsys.readouterr().out
    assert "mean over 2 logged epochs" in out and "gradient cosine" not in out
    assert "{y1, y2, y3}" in out
