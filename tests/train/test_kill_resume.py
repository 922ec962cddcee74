"""kill -9 at named moments of ``taskloom train`` and ``taskloom compare``, then ``--resume``: the resumed run
ends with the test metrics of an uninterrupted run, bit for bit, one record per epoch in every metrics.jsonl
and no temporary file left behind.

Each command is killed at seven moments (see :mod:`taskloom.train.faults`), one after the other: the run is
started with the first fault, each resume carries the next one, and a last resume runs to the end. After each
kill the test checks that the hazard the resume must repair is really there (a temporary file, an epoch logged
past the checkpoint), so a passing test proves the repair, not the absence of the hazard.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import taskloom
from taskloom.train.faults import FAULT_VARIABLE

CONFIG = {
    "name": "crash",
    "data": {"dataset": "synthetic", "options": {"n": 240, "d": 6, "num_tasks": 2}},
    "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
    "optimizer": {"lr": 0.01},
    "train": {"epochs": 4, "batch_size": 64, "num_threads": 1},
}

# (fault, what the kill must leave behind for the resume to repair)
TRAIN_FAULTS = [
    ("write_best:1", "temporary"),  # inside the write of best.pt, epoch 1 (no last.pt yet)
    ("step:2", None),  # after the first optimizer step of epoch 2
    ("after_log:2", "logged_ahead"),  # between the metrics.jsonl append and the last.pt save
    ("write_last:2", "temporary"),  # inside the write of last.pt (after the append: also logged ahead)
    ("after_last:2", None),  # after last.pt, before seconds.json
    ("write_seconds:3", "temporary"),  # inside the write of seconds.json
    ("after_log:4", "logged_ahead"),  # the last epoch, logged but not checkpointed
]
COMPARE_FAULTS = [
    ("write_best:1@single/y1", "temporary"),
    ("after_log:2@single/y1", "logged_ahead"),
    ("write_last:3@single/y1", "temporary"),
    ("step:2@hard+equal", None),
    ("after_last:2@hard+equal", None),
    ("write_seconds:3@hard+equal/seed0", "temporary"),
    ("after_log:4@single/y2", "logged_ahead"),  # seed 1's single-task y2 model
]


def taskloom_cli(args: list[str], cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop(FAULT_VARIABLE, None)
    if fault:
        env[FAULT_VARIABLE] = fault
    source = str(Path(taskloom.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([source, env.get("PYTHONPATH", "")])
    code = "import sys; from taskloom.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def temporaries(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


def checkpointed_epochs(model_dir: Path) -> int:
    """Epochs covered by the model's last.pt (0 without one), read the way a resume reads it."""
    from taskloom.train.checkpoint import load_checkpoint

    last = model_dir / "checkpoints" / "last.pt"
    return load_checkpoint(last)["next_epoch"] - 1 if last.is_file() else 0


def logged_epochs(path: Path) -> list[int]:
    epochs = []
    for line in path.read_text().splitlines():
        try:
            epochs.append(json.loads(line)["epoch"])
        except json.JSONDecodeError:
            continue
    return epochs


def model_dirs(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in run_dir.rglob("metrics.jsonl") if p.parent != run_dir)


def logged_ahead(run_dir: Path) -> bool:
    """Some model's metrics.jsonl holds an epoch its last checkpoint does not cover."""
    return any(max(logged_epochs(d / "metrics.jsonl"), default=0) > checkpointed_epochs(d) for d in model_dirs(run_dir))


def strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"{path}: bare {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def assert_clean(run_dir: Path) -> None:
    assert not temporaries(run_dir)
    for path in run_dir.rglob("metrics.jsonl"):
        lines = path.read_text().splitlines()
        records = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{path}: bare {c}")) for line in lines]
        keys = [(r["model"], r["epoch"]) for r in records]
        assert len(keys) == len(set(keys)), f"{path} holds an epoch twice: {keys}"
    for path in run_dir.rglob("*.json"):
        strict_json(path)


def killed_and_resumed(command: list[str], resume: list[str], faults, tmp_path: Path) -> Path:
    """Start ``command`` with the first fault, resume with each next one, then resume to the end."""
    first = taskloom_cli(command, tmp_path, faults[0][0])
    assert first.returncode == -signal.SIGKILL, first.stdout + first.stderr
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1
    run_dir = runs[0]
    for index, (fault, hazard) in enumerate(faults):
        if index:
            killed = taskloom_cli([*resume, str(run_dir)], tmp_path, fault)
            assert killed.returncode == -signal.SIGKILL, f"{fault} never fired:\n{killed.stdout}{killed.stderr}"
        if hazard == "temporary":
            assert temporaries(run_dir), f"the kill at {fault} left no temporary file"
        if hazard == "logged_ahead":
            assert logged_ahead(run_dir), f"the kill at {fault} logged no epoch past the checkpoint"
    finished = taskloom_cli([*resume, str(run_dir)], tmp_path)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return run_dir


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "output_dir": "runs"}))
    return path


def assert_same_results(run_dir: Path, reference: Path, models: int) -> None:
    """Every model's test metrics (its results.json) and compare.json's values equal the reference run's."""
    cells = sorted(str(p.parent.relative_to(reference)) for p in reference.rglob("results.json"))
    assert len(cells) == models
    for cell in cells:
        ours = strict_json(run_dir / cell / "results.json")["test"]
        assert ours == strict_json(reference / cell / "results.json")["test"], cell
    ours, theirs = strict_json(run_dir / "compare.json"), strict_json(reference / "compare.json")
    assert {n: v["values"] for n, v in ours["variants"].items()} == {
        n: v["values"] for n, v in theirs["variants"].items()}
    for model_dir in model_dirs(run_dir):
        assert logged_epochs(model_dir / "metrics.jsonl") == [1, 2, 3, 4], model_dir
        seconds = strict_json(model_dir / "seconds.json")["epochs"]
        assert sorted(seconds, key=int) == ["1", "2", "3", "4"], model_dir  # no epoch's time lost or counted twice


def reference_run(command: list[str], tmp_path: Path, config: Path) -> Path:
    straight = tmp_path / "straight"
    straight.mkdir()
    (straight / config.name).write_text(config.read_text())
    done = taskloom_cli(command, straight)
    assert done.returncode == 0, done.stdout + done.stderr
    return next((straight / "runs").iterdir())


def test_train_killed_at_seven_moments_resumes_to_the_uninterrupted_result(tmp_path):
    config = write_config(tmp_path)
    command = ["train", config.name]
    reference = reference_run(command, tmp_path, config)
    run_dir = killed_and_resumed(command, ["train", "--resume"], TRAIN_FAULTS, tmp_path)
    assert_same_results(run_dir, reference, models=1)
    assert_clean(run_dir)


def test_compare_killed_at_seven_moments_resumes_to_the_uninterrupted_result(tmp_path):
    config = write_config(tmp_path)
    command = ["compare", config.name, "--methods", "ew", "--seeds", "2"]
    reference = reference_run(command, tmp_path, config)
    run_dir = killed_and_resumed(command, ["compare", "--resume"], COMPARE_FAULTS, tmp_path)
    assert_same_results(run_dir, reference, models=6)  # 2 seeds x (2 single-task models + 1 multi-task model)
    assert_clean(run_dir)
