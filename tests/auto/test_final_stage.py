"""taskloom auto end to end: the winner, hard+equal and single-task models over seeds, judged on test."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from cli_output import run_cli

optuna = pytest.importorskip("optuna")

from taskloom import cli  # noqa: E402
from taskloom.auto import SearchSpace, recommend, run_auto  # noqa: E402
from taskloom.config import parse_config  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"
RAW = {"name": "tiny",
       "data": {"dataset": "synthetic", "options": {"n": 200, "d": 6, "num_tasks": 3, "correlation": 0.9}},
       "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
       "optimizer": {"lr": 0.01}, "train": {"epochs": 2, "batch_size": 64, "num_threads": 1}}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("auto")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**RAW, "output_dir": str(tmp_path / "runs")}))
    code, out = run_cli(["auto", str(config), "--trials", "2", "--seeds", "2", "--architectures", "hard",
                         "--methods", "equal,pcgrad", "--pruner", "none", "--run-dir", str(tmp_path / "run")])
    assert code == 0
    return tmp_path / "run", out


def test_the_final_stage_compares_the_winner_with_hard_equal_and_single_task_models(cli_run):
    run_dir, out = cli_run
    auto = json.loads((run_dir / "auto.json").read_text())
    compare = json.loads((run_dir / "compare.json").read_text())
    winner = auto["final"]["variant"]
    params = auto["winner"]["params"]
    assert winner == f"{params['architecture']}+{params['balancing']}"
    assert {"single", "hard+equal", winner} <= set(compare["variants"])
    assert compare["seeds"] == [0, 1]
    assert auto["recommendation"] == recommend(compare["analysis"], winner)
    assert auto["recommendation"]["text"] in out.replace("\n", "")
    assert len(auto["trials"]) == 2 and auto["counts"] == {"complete": 2}
    assert set(auto["importances"]["values"]) <= {"architecture", "balancing", "lr"}


def test_the_final_cells_use_the_winners_learning_rate_and_report_on_test(cli_run):
    run_dir, _ = cli_run
    auto = json.loads((run_dir / "auto.json").read_text())
    final = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert final["optimizer"]["lr"] == pytest.approx(auto["winner"]["params"]["lr"])
    results = json.loads((run_dir / f"{auto['final']['variant']}/seed1/results.json").read_text())
    assert set(results["test"]) == {"y1", "y2", "y3"}


def test_the_report_has_a_search_section(cli_run):
    run_dir, _ = cli_run
    text = (run_dir / "report.html").read_text()
    assert "<h2>Search</h2>" in text and "best validation score so far" in text
    assert "2 trials: 2 complete, 0 pruned." in text


def test_the_readme_auto_commands_parse():
    section = README.read_text().split("## Finding the set-up that wins: taskloom auto", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0].split() for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S)
                for line in block.splitlines() if line.startswith("taskloom auto")]
    assert len(commands) >= 4
    parser = cli.build_parser()
    for command in commands:
        args = parser.parse_args(command[1:])
        assert args.func is cli.command_auto
