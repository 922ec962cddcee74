"""The console of train/run/compare: a progress bar always; one line per epoch only with -v, naming the score
that selects checkpoints."""
from __future__ import annotations

import yaml

from taskloom.cli import build_parser, epoch_line, main

CONFIG = {
    "name": "console",
    "data": {"dataset": "synthetic", "options": {"n": 160, "d": 4, "num_tasks": 2}},
    "model": {"trunk": {"name": "mlp", "options": {"hidden": [4]}}},
    "train": {"epochs": 2, "batch_size": 64, "num_threads": 1},
    "output_dir": "runs",
}


def test_verbose_is_an_option_of_run_train_and_compare_before_or_after_the_command():
    parser = build_parser()
    for command in (["run"], ["train", "c.yaml"], ["compare", "c.yaml"]):
        assert parser.parse_args([*command, "-v"]).verbose is True
        assert parser.parse_args([*command, "--verbose"]).verbose is True
        assert parser.parse_args(["-v", *command]).verbose is True  # not reset by the subcommand's default
        assert parser.parse_args(command).verbose is False


def test_epoch_lines_only_with_verbose_and_they_name_the_selection_score(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    assert main(["train", "c.yaml"]) == 0
    quiet = capsys.readouterr().out
    assert "hard+equal/seed0 epoch 2/2" in quiet  # the progress bar
    assert "epoch 1:" not in quiet and "checkpoint selection" not in quiet
    assert main(["train", "c.yaml", "-v"]) == 0
    verbose = " ".join(capsys.readouterr().out.split())
    assert "hard+equal/seed0 epoch 1: y1: mse" in verbose and "hard+equal/seed0 epoch 2: y1: mse" in verbose
    # the first evaluation is its own baseline: a change of 0 by definition
    assert "checkpoint selection: mean % change of y1 mse, y2 mse vs the first evaluation = +0.00" in verbose


def test_an_epoch_line_says_when_the_score_is_undefined():
    record = {"epoch": 3, "val": {"a": {"auroc": None, "accuracy": 0.5}}, "score": float("-inf"),
              "selected_by": "a auroc (higher is better)"}
    assert epoch_line("m", record) == ("m epoch 3: a: accuracy 0.5000; checkpoint selection: a auroc (higher is "
                                       "better) = undefined (a metric is not finite)")
