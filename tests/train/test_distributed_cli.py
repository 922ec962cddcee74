"""``taskloom train CONFIG --nproc 2`` (torchrun, gloo on CPU) against one process on a tiny synthetic config."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from taskloom.train.faults import FAULT_VARIABLE

CONFIG = """\
name: tiny
data:
  dataset: synthetic
  options: {{n: 600}}
model:
  architecture: hard
balancing: {{method: pcgrad}}
optimizer: {{name: sgd, lr: 0.05}}
train: {{epochs: 2, batch_size: 64, seed: 0}}
output_dir: {output}
"""
#: 2 ranks sum per-rank partial losses and gradients in another order than one process: float32 rounding
TOLERANCE = 1e-4


def _train(folder: Path, *extra: str) -> dict:
    folder.mkdir()
    config = folder / "tiny.yaml"
    config.write_text(CONFIG.format(output=folder / "runs"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "taskloom", "train", str(config), *extra], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = list((folder / "runs").iterdir())
    assert len(runs) == 1, f"expected one run directory, found {runs}"
    assert sorted(p.name for p in folder.iterdir()) == ["runs", "tiny.yaml"], "a rank wrote outside the run directory"
    return json.loads((runs[0] / "hard+pcgrad" / "seed0" / "results.json").read_text())


def test_two_processes_give_the_test_metrics_of_one(tmp_path):
    two = _train(tmp_path / "two", "--nproc", "2")
    one = _train(tmp_path / "one")
    assert two["best_epoch"] == one["best_epoch"]
    for task, metrics in one["test"].items():
        for name, value in metrics.items():
            if isinstance(value, float):
                assert abs(two["test"][task][name] - value) <= TOLERANCE * max(1.0, abs(value)), (task, name)


def test_the_readme_torchrun_command_runs(tmp_path):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Training on several processes or GPUs", 1)[1].split("```sh\n", 1)[1].split("```")[0]
    command = next(line for line in section.splitlines() if line.startswith("torchrun "))
    words = command.split()
    example = Path(__file__).parents[2] / words[-1]
    (tmp_path / "examples").mkdir()
    (tmp_path / words[-1]).write_text(example.read_text())
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launcher + words[1:], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "compare.json").is_file()


def test_a_resume_under_torchrun_continues_bit_exact(tmp_path):
    """Rank 0 is killed after epoch 1's last.pt; ``--resume --nproc 2`` ends with the uninterrupted run's metrics."""
    whole = _train(tmp_path / "whole", "--nproc", "2")
    folder = tmp_path / "killed"
    folder.mkdir()
    config = folder / "tiny.yaml"
    config.write_text(CONFIG.format(output=folder / "runs"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", FAULT_VARIABLE: "after_last:1"}
    killed = subprocess.run([sys.executable, "-m", "taskloom", "train", str(config), "--nproc", "2"], cwd=folder,
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0
    (run,) = list((folder / "runs").iterdir())
    cell = run / "hard+pcgrad" / "seed0"
    assert (cell / "checkpoints" / "last.pt").is_file() and not (cell / "results.json").is_file()
    env.pop(FAULT_VARIABLE)
    resumed = subprocess.run([sys.executable, "-m", "taskloom", "train", "--resume", str(run), "--nproc", "2"],
                             cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    result = json.loads((cell / "results.json").read_text())
    assert result["test"] == whole["test"]
    assert result["best_epoch"] == whole["best_epoch"]


def _compare(folder: Path, *extra: str) -> dict:
    folder.mkdir()
    config = folder / "tiny.yaml"
    config.write_text(CONFIG.format(output=folder / "runs"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "taskloom", "compare", str(config), "--methods", "equal,mgda",
                           "--seeds", "1", *extra], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = list((folder / "runs").iterdir())
    return json.loads((run / "compare.json").read_text())


def test_compare_on_two_processes_gives_every_cell_the_metrics_of_one(tmp_path):
    """The whole grid (single-task baselines and two multi-task variants) runs data-parallel, cell by cell."""
    two = _compare(tmp_path / "two", "--nproc", "2")
    one = _compare(tmp_path / "one")
    assert sorted(two["cells"]) == sorted(one["cells"]) and len(one["cells"]) >= 3
    for key, cell in one["cells"].items():
        for task, metrics in cell["test"].items():
            for name, value in metrics.items():
                if isinstance(value, float):
                    got = two["cells"][key]["test"][task][name]
                    assert abs(got - value) <= TOLERANCE * max(1.0, abs(value)), (key, task, name, got, value)


def test_tracking_on_several_processes_is_refused_with_the_reason(tmp_path):
    folder = tmp_path / "track"
    folder.mkdir()
    config = folder / "tiny.yaml"
    config.write_text(CONFIG.format(output=folder / "runs"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "taskloom", "compare", str(config), "--seeds", "1", "--track",
                           "conflict", "--nproc", "2"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert "not supported on several processes" in done.stdout + done.stderr
