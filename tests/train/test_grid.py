"""The compare grid end to end on tiny generated data: tables, compare.json, resume, groups, affinity CLI."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from taskloom import cli
from taskloom.cli import main
from taskloom.config import ConfigError
from taskloom.evaluate.verdict import compare_variants
from taskloom.train import grid
from taskloom.train.trainer import Trainer

TASKS = ("y1", "y2", "y3")


def _config(tmp_path: Path) -> Path:
    config = {
        "name": "tiny",
        "data": {"dataset": "synthetic", "options": {"n": 300, "d": 6, "num_tasks": 3, "correlation": 0.9}},
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
        "optimizer": {"lr": 0.01},
        "train": {"epochs": 2, "batch_size": 64, "num_threads": 1},
        "output_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run_dir(out: str) -> Path:
    return Path(out.split("run directory:")[1].split()[0])


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One grid: ew and pcgrad on hard sharing, 2 seeds, conflict + affinity logged, TAG groups for 2 networks."""
    tmp_path = tmp_path_factory.mktemp("grid")
    buffer = io.StringIO()
    console = cli.console
    cli.console = Console(file=buffer, width=200)  # wide enough that no column is cut
    try:
        code = main(["compare", str(_config(tmp_path)), "--methods", "ew,pcgrad", "--architectures", "hard",
                     "--seeds", "2", "--track", "conflict,affinity", "--groups", "2"])
    finally:
        cli.console = console
    assert code == 0
    out = buffer.getvalue()
    return _run_dir(out), out


def test_compare_writes_the_grid_and_its_table(compared):
    run_dir, out = compared
    compare = json.loads((run_dir / "compare.json").read_text())
    assert compare["baseline"] == "single" and compare["seeds"] == [0, 1]
    assert set(compare["tasks"]) == set(TASKS)
    assert {"single", "hard+equal", "hard+pcgrad", "groups-2"} <= set(compare["variants"])
    for name in ("single", "hard+equal", "hard+pcgrad"):
        variant = compare["variants"][name]
        assert sorted(variant["values"]) == ["0", "1"]
        assert all(set(row) == set(TASKS) for row in variant["values"].values())
        assert variant["inference_seconds"] > 0 and set(variant["train_seconds"]) == {"0", "1"}
    assert compare["variants"]["single"]["models"] == 3 and compare["variants"]["hard+equal"]["models"] == 1
    assert compare["variants"]["single"]["parameters"] > compare["variants"]["hard+equal"]["parameters"]
    result = compare_variants(compare)
    assert result["variants"]["hard+pcgrad"]["delta_m"]["low"] is not None
    assert "paired t-test over 2 seeds" in result["variants"]["hard+equal"]["tasks"]["y1"]["test"]
    for text in ("hard+pcgrad", "delta-m", "95% CI", "verdict", "TAG grouping into 2 networks", "plateau"):
        assert text in out
    assert "groups-2 vs all-in-one hard+equal: delta-m" in out
    assert set(compare["curve_signals"]) == set(TASKS)
    for cell in ("single/y1/seed0", "single/y3/seed1", "hard+equal/seed1", "hard+pcgrad/seed0"):
        assert (run_dir / cell / "results.json").is_file()


def test_compare_logs_tracking_and_writes_the_report(compared):
    run_dir, _ = compared
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    multi = [r for r in records if r["model"] == "hard+equal"]
    assert len(multi) == 2 and all(set(r["affinity"]) == set(TASKS) and set(r["conflict"]) == set(TASKS)
                                   for r in multi)
    assert not any("affinity" in r for r in records if r["model"].startswith("single/"))
    text = (run_dir / "report.html").read_text()
    assert "Compare grid" in text and "hard+pcgrad gain" in text


def test_groups_follow_the_affinity_and_reuse_single_task_models(compared):
    run_dir, _ = compared
    compare = json.loads((run_dir / "compare.json").read_text())
    groups = compare["groupings"]["2"]["groups"]
    assert {t for g in groups for t in g} == set(TASKS)
    assert compare["variants"]["groups-2"]["groups"] == groups
    for group in groups:
        if len(group) > 1:
            assert (run_dir / "group" / "+".join(group) / "seed0" / "results.json").is_file()
    affinity, _ = grid.grid_affinity(run_dir, grid.GridSpec(**json.loads((run_dir / "grid.json").read_text())))
    assert grid.select_groups(affinity, 2, list(TASKS)).groups == groups


def test_resume_redoes_nothing_that_finished(compared, monkeypatch, capsys):
    run_dir, _ = compared
    results = sorted(run_dir.glob("**/results.json"))
    mtimes = {p: p.stat().st_mtime_ns for p in results}
    fits = []
    original = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: fits.append(self.model_name) or original(self, *a, **k))
    assert main(["compare", "--resume", str(run_dir)]) == 0
    assert fits == []
    assert {p: p.stat().st_mtime_ns for p in results} == mtimes
    # an interrupted cell (no results.json) is the only one trained again
    (run_dir / "hard+pcgrad" / "seed1" / "results.json").unlink()
    assert main(["compare", "--resume", str(run_dir)]) == 0
    assert fits == ["hard+pcgrad"]
    # options not repeated keep the stored grid; a new method only adds its own cells
    assert main(["compare", "--resume", str(run_dir), "--methods", "ew,pcgrad,uw"]) == 0
    assert fits == ["hard+pcgrad"] + ["hard+uncertainty"] * 2
    assert json.loads((run_dir / "grid.json").read_text())["seeds"] == [0, 1]
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if "hard+pcgrad/seed1" not in str(p))


def test_affinity_command_prints_the_matrix_and_groupings(compared, capsys):
    run_dir, _ = compared
    assert main(["affinity", str(run_dir), "--groups", "3"]) == 0
    out = capsys.readouterr().out
    assert "TAG lookahead affinity" in out and "gradient cosine similarity" in out
    assert "suggested task groupings" in out and all(t in out for t in TASKS)


def test_affinity_without_logged_affinity_says_how_to_get_it(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"model": "multitask", "epoch": 1, "train_loss": {"a": 1.0}}\n')
    assert main(["affinity", str(tmp_path)]) == 2
    assert "tracking" in capsys.readouterr().out


def test_method_aliases_and_bad_names():
    assert grid.resolve_methods(["ew", "uw", "pcgrad", "equal"]) == ["equal", "uncertainty", "pcgrad"]
    with pytest.raises(ConfigError, match="--methods: unknown balancing method 'nope'"):
        grid.resolve_methods(["nope"])
    with pytest.raises(ConfigError, match="--architectures: unknown architecture 'tower'"):
        grid.resolve_architectures(["tower"])


def test_bad_compare_options_name_the_option(tmp_path, capsys):
    config = str(_config(tmp_path))
    assert main(["compare", config, "--methods", "ew,bogus"]) == 2
    assert "--methods" in capsys.readouterr().out
    assert main(["compare", config, "--track", "gradients"]) == 2
    assert "--track" in capsys.readouterr().out
    assert main(["compare", config, "--groups", "two"]) == 2
    assert "--groups" in capsys.readouterr().out
    assert main(["compare", config, "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().out


def test_report_command_writes_the_report(compared, capsys):
    run_dir, _ = compared
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()
