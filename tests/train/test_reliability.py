"""No silently wrong results: divergence stops the run, non-finite metrics are never selected nor written as bare
NaN, bad checkpoints are named before a resume does any work, and a resume repairs what a kill left behind."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from taskloom import MultiTaskDataset, MultiTaskModel, Task
from taskloom.cli import main
from taskloom.config import parse_config
from taskloom.train.checkpoint import (
    CheckpointError, check_run_checkpoints, load_checkpoint, remove_orphan_temporaries, save_checkpoint,
)
from taskloom.train.json_files import to_json, write_json_atomically
from taskloom.train.grid import run_training
from taskloom.train.timing import read_epoch_seconds
from taskloom.train.trainer import Trainer, TrainingDiverged

CONFIG = {
    "name": "reliable",
    "data": {"dataset": "synthetic", "options": {"n": 200, "d": 6, "num_tasks": 2}},
    "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
    "optimizer": {"lr": 0.01},
    "train": {"epochs": 3, "batch_size": 64, "num_threads": 1},
}


def strict(text: str):
    """Parse JSON as a strict parser does: bare NaN, Infinity and -Infinity are refused."""
    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def regression_data(n: int = 64) -> tuple[MultiTaskDataset, list[Task]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    return MultiTaskDataset(x, {"a": x[:, 0], "b": x[:, 1] * 3}), [Task("a", "regression"), Task("b", "regression")]


def small_trainer(tasks: list[Task], run_dir: Path | None = None, **options) -> Trainer:
    torch.manual_seed(0)
    model = MultiTaskModel(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU()), tasks=tasks, out_features=8)
    return Trainer(model, tasks, **{"epochs": 3, "batch_size": 16, "seed": 0, "run_dir": run_dir, **options})


# -- divergence ----------------------------------------------------------------------------------------------
def test_a_non_finite_loss_stops_training_naming_task_epoch_and_step(tmp_path):
    data, tasks = regression_data()
    trainer = small_trainer(tasks, tmp_path, optimizer="sgd", lr=1e6)
    with pytest.raises(TrainingDiverged) as caught:
        trainer.fit(data, data)
    error = caught.value
    assert error.task in ("a", "b") and error.epoch == 1 and 1 <= error.step <= 4
    message = str(error)
    assert f"task {error.task!r}" in message and "epoch 1, step" in message and "of 4" in message
    assert "Lower the learning rate (optimizer.lr, now 1e+06" in message
    assert not (tmp_path / "checkpoints" / "last.pt").exists()  # nothing of the diverged epoch is kept
    assert not (tmp_path / "metrics.jsonl").exists()


def test_the_cli_turns_divergence_into_a_message_and_exit_code_3(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {**CONFIG, "optimizer": {"name": "sgd", "lr": 1e6}, "output_dir": "runs"}
    (tmp_path / "diverge.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "diverge.yaml"]) == 3
    out = " ".join(capsys.readouterr().out.split())
    assert "error: hard+equal: the training loss of task 'y" in out
    assert "at epoch 1, step" in out and "Lower the learning rate" in out
    assert "Traceback" not in out


def test_a_nan_validation_metric_is_never_selected_and_is_written_as_null(tmp_path):
    data, tasks = regression_data()
    trainer = small_trainer(tasks, tmp_path)
    mse = {1: {"a": 2.0, "b": 2.0}, 2: {"a": float("nan"), "b": 1.0}, 3: {"a": 3.0, "b": float("inf")}}
    epochs = iter([1, 2, 3])
    trainer.evaluate = lambda val, batch_size=None: {  # the validation results of each epoch, by hand
        name: {"mse": value, "loss": value, "labelled": 64} for name, value in mse[next(epochs)].items()}
    trainer.fit(data, data)
    assert trainer.history.best_epoch == 1
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert json.loads(best["history"])["best_epoch"] == 1
    records = [strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["score"] for r in records] == [0.0, None, None]
    assert records[1]["val"]["a"]["mse"] is None and records[2]["val"]["b"]["mse"] is None
    assert records[2]["val"]["a"]["mse"] == 3.0


def test_json_writers_write_null_for_non_finite_floats(tmp_path):
    payload = {"nan": float("nan"), "nested": [1.5, float("inf"), {"low": float("-inf")}], "tuple": (2.0, math.nan)}
    expected = {"nan": None, "nested": [1.5, None, {"low": None}], "tuple": [2.0, None]}
    assert strict(to_json(payload)) == expected
    write_json_atomically(tmp_path / "out.json", payload)
    assert strict((tmp_path / "out.json").read_text()) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_every_json_file_of_a_run_parses_strictly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {**CONFIG, "train": {**CONFIG["train"], "epochs": 2}, "output_dir": "runs"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "c.yaml", "--baselines"]) == 0
    files = list((tmp_path / "runs").rglob("*.json")) + list((tmp_path / "runs").rglob("*.jsonl"))
    assert {p.name for p in files} >= {"compare.json", "results.json", "seconds.json", "metrics.jsonl"}
    for path in files:
        for line in path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]:
            strict(line)


# -- bad checkpoints on --resume -----------------------------------------------------------------------------
def interrupted_run(tmp_path: Path) -> Path:
    """A train run stopped after its second of three epochs (the resume has an epoch left to train)."""
    config = parse_config({**CONFIG, "output_dir": str(tmp_path)})

    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(config, tmp_path / "run", callbacks={"epoch": interrupt})
    return tmp_path / "run"


MODEL = Path("hard+equal") / "seed0"  # where taskloom train keeps its model


class Payload:
    """Pickles as a call of print: what a malicious checkpoint would run on an unsafe load."""

    def __reduce__(self):
        return (print, ("the payload ran",))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def not_a_checkpoint(path: Path) -> None:
    path.write_text("this is a text file, not a checkpoint\n")


def unsafe(path: Path) -> None:
    torch.save({"model": Payload(), "next_epoch": 1, "task_names": ["y1"]}, path)


@pytest.mark.parametrize("damage, name, says", [
    (truncate, "last.pt", "is corrupt"),
    (not_a_checkpoint, "best.pt", "is corrupt"),
    (unsafe, "best-y2.pt", "is unsafe"),
])
def test_a_bad_checkpoint_is_named_before_the_resume_does_any_work(tmp_path, capsys, damage, name, says):
    run_dir = interrupted_run(tmp_path)
    bad = run_dir / MODEL / "checkpoints" / name
    assert bad.is_file()
    damage(bad)
    log_before = (run_dir / MODEL / "metrics.jsonl").read_text()
    files_before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 2
    out = capsys.readouterr().out
    assert f"error: checkpoint {bad} {says}" in out
    assert "weights_only" not in out and "the payload ran" not in out
    assert (run_dir / MODEL / "metrics.jsonl").read_text() == log_before
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files_before
    assert not (run_dir / MODEL / "results.json").exists() and not (run_dir / "compare.json").exists()


def test_the_trainer_itself_checks_every_checkpoint_of_its_model(tmp_path):
    data, tasks = regression_data()
    small_trainer(tasks, tmp_path, epochs=1).fit(data, data)
    not_a_checkpoint(tmp_path / "checkpoints" / "best-a.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint .*best-a\.pt is corrupt"):
        small_trainer(tasks, tmp_path, epochs=2).resume()


def test_check_run_checkpoints_reads_every_model_of_the_run(tmp_path):
    state = {"model": {"w": torch.ones(2)}, "next_epoch": 2, "task_names": ["a"]}
    for model in ("single/a/seed0", "hard+equal/seed0"):
        for name in ("last.pt", "best.pt"):
            save_checkpoint(state, tmp_path / model / "checkpoints" / name)
    assert len(check_run_checkpoints(tmp_path)) == 4
    torch.save({"weights": torch.ones(1)}, tmp_path / "hard+equal/seed0/checkpoints/best.pt")
    with pytest.raises(CheckpointError, match=r"hard\+equal/seed0/checkpoints/best\.pt is not a taskloom"):
        check_run_checkpoints(tmp_path)
    # a finished cell (its results.json written) is never loaded by a resume: its files are not read
    (tmp_path / "hard+equal/seed0/results.json").write_text("{}")
    not_a_checkpoint(tmp_path / "hard+equal/seed0/checkpoints/last.pt")
    assert [str(p.relative_to(tmp_path)) for p in check_run_checkpoints(tmp_path)] == [
        "single/a/seed0/checkpoints/best.pt", "single/a/seed0/checkpoints/last.pt"]


# -- what a kill leaves behind ---------------------------------------------------------------------------------
def test_resume_cuts_the_log_back_to_the_checkpoint_and_removes_orphan_temporaries(tmp_path):
    data, tasks = regression_data()
    trainer = small_trainer(tasks, tmp_path, epochs=2)
    trainer.fit(data, data)
    log = tmp_path / "metrics.jsonl"
    lines = log.read_text().splitlines()
    assert [strict(line)["epoch"] for line in lines] == [1, 2]
    # as if killed after epoch 3's append (then a torn line of a fourth) and during a checkpoint write
    log.write_text("\n".join(lines) + "\n" + lines[1].replace('"epoch": 2', '"epoch": 3') + '\n{"model": "mu')
    orphans = [tmp_path / "checkpoints" / ".last.pt.x1y2.tmp", tmp_path / ".seconds.json.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"partial")
    resumed = small_trainer(tasks, tmp_path, epochs=2)
    assert resumed.resume() and resumed.start_epoch == 3
    assert log.read_text() == "\n".join(lines) + "\n"
    assert not any(orphan.exists() for orphan in orphans)


def test_a_fresh_start_keeps_no_record_of_an_epoch_without_a_checkpoint(tmp_path):
    _, tasks = regression_data()
    (tmp_path / "metrics.jsonl").write_text('{"model": "multitask", "epoch": 1}\n')
    trainer = small_trainer(tasks, tmp_path)
    assert trainer.resume() is False and trainer.start_epoch == 1
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_remove_orphan_temporaries_leaves_other_files(tmp_path):
    keep = [tmp_path / "results.json", tmp_path / "notes.tmp", tmp_path / "checkpoints" / "last.pt"]
    drop = [tmp_path / ".results.json.tmp", tmp_path / "checkpoints" / ".best.pt.abc.tmp"]
    for path in keep + drop:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert sorted(remove_orphan_temporaries(tmp_path)) == sorted(drop)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in drop)


def test_seconds_of_an_epoch_killed_before_they_were_saved_come_from_its_record(tmp_path):
    (tmp_path / "seconds.json").write_text(json.dumps({"epochs": {"1": {"train": 2.0, "analysis": 0.5},
                                                                  "3": {"train": 9.0, "analysis": 0.0}}}))
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"epoch": 1, "seconds": 7.0}, {"epoch": 2, "seconds": 1.25, "analysis_seconds": 0.25}]) + "\n")
    # epoch 2 was checkpointed but its seconds were not saved; epoch 3 was not checkpointed
    assert read_epoch_seconds(tmp_path / "seconds.json", before_epoch=3) == {
        "1": {"train": 2.0, "analysis": 0.5}, "2": {"train": 1.25, "analysis": 0.25}}


def test_compare_resume_names_a_bad_checkpoint_of_an_unfinished_cell_before_any_work(tmp_path, capsys):
    from taskloom.train.grid import GridSpec, run_grid

    config = parse_config({**CONFIG, "output_dir": str(tmp_path)})

    def interrupt(record):
        if record["model"] == "hard+equal" and record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(config, GridSpec(methods=["equal"], architectures=["hard"], seeds=[0]), tmp_path / "grid",
                 callbacks={"epoch": interrupt})
    bad = tmp_path / "grid" / "hard+equal" / "seed0" / "checkpoints" / "last.pt"
    truncate(bad)
    files_before = {p: p.read_bytes() for p in (tmp_path / "grid").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["compare", "--resume", str(tmp_path / "grid")]) == 2
    out = capsys.readouterr().out
    assert f"error: checkpoint {bad} is corrupt" in out and "weights_only" not in out
    assert {p: p.read_bytes() for p in (tmp_path / "grid").rglob("*") if p.is_file()} == files_before


@pytest.mark.parametrize("method", ["mgda", "upgrad", "imtl_g"])
def test_divergence_is_named_when_a_gradient_method_fails_on_non_finite_gradients(tmp_path, method):
    from taskloom import build_balancer

    data, tasks = regression_data()
    # lr 1e6: the gradients overflow while the losses are still finite; these methods' solvers then fail
    trainer = small_trainer(tasks, tmp_path, optimizer="sgd", lr=1e6, balancer=build_balancer(method, ["a", "b"]))
    with pytest.raises(TrainingDiverged, match=r"the training loss of task '[ab]' is .* at epoch 1, step [1-4] of 4"):
        trainer.fit(data, data)


def test_a_failure_that_is_not_divergence_is_raised_unchanged(tmp_path):
    data, tasks = regression_data()
    trainer = small_trainer(tasks, tmp_path)

    def broken_backward(losses, model, scale=None):
        raise RuntimeError("a bug in a balancing method")

    trainer.balancer.backward = broken_backward
    with pytest.raises(RuntimeError, match="a bug in a balancing method") as caught:
        trainer.fit(data, data)
    assert not isinstance(caught.value, TrainingDiverged)
