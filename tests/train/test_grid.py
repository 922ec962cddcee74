"""The compare grid end to end on tiny generated data: tables, compare.json, resume, groups, affinity CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_output import run_cli

from taskloom.cli import main
from taskloom.config import ConfigError, parse_config
from taskloom.evaluate.verdict import compare_variants, load_replicates
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
    code, out = run_cli(["compare", str(_config(tmp_path)), "--methods", "ew,pcgrad", "--architectures", "hard",
                         "--seeds", "2", "--track", "conflict,affinity", "--groups", "2"])  # 200 columns: none cut
    assert code == 0
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
    result = compare["analysis"]
    assert result["variants"]["hard+pcgrad"]["delta_m"]["low"] is not None
    row = result["variants"]["hard+equal"]["tasks"]["y1"]
    assert row["covers"] == "seeds and test rows" and "paired bootstrap over test rows" in row["test"]
    assert row["seed_only"]["test"].startswith("paired t-test over 2 seeds")
    assert result == json.loads(json.dumps(compare_variants(compare, load_replicates(run_dir, compare))))
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
    assert "Comparison (" in text and "gain in</th>" in text and "<th>hard+<wbr>pcgrad</th>" in text


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


def _mean_by_hand(paths: list[Path], key: str) -> dict[tuple[str, str], float]:
    values: dict[tuple[str, str], list[float]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            for a, row in (json.loads(line).get(key) or {}).items():
                for b, value in row.items():
                    if value is not None:
                        values.setdefault((a, b), []).append(value)
    return {pair: sum(v) / len(v) for pair, v in values.items()}


def test_the_grouping_affinity_is_stored_and_labelled_as_the_one_used(compared):
    """compare.json keeps the matrix --groups used: the grouping variant's mean over every epoch of every seed."""
    run_dir, _ = compared
    compare = json.loads((run_dir / "compare.json").read_text())
    used = compare["grouping_affinity"]
    assert used["variant"] == "hard+equal" and used["epochs"] == 4 and used["missing_pairs"] == []
    expected = _mean_by_hand([run_dir / "hard+equal" / f"seed{s}" / "metrics.jsonl" for s in (0, 1)], "affinity")
    for (a, b), value in expected.items():
        assert used["matrix"][a][b] == pytest.approx(value)
    text = (run_dir / "report.html").read_text()
    assert text.count("chose the task groups by") == 1
    section = text.split("<section id='conflict'>")[1].split("</section>")[0]
    assert "group/" not in section and "<h3>hard+pcgrad</h3>" in section


def test_compare_table_is_also_written_as_csv_and_markdown(compared):
    import csv

    run_dir, _ = compared
    compare = json.loads((run_dir / "compare.json").read_text())
    rows = list(csv.DictReader((run_dir / "compare.csv").open()))
    variants = list(compare["variants"])
    assert [(r["task"], r["variant"]) for r in rows] == [(t, v) for t in TASKS for v in variants]
    cells = {s: {v: json.loads((run_dir / v / f"seed{s}" / "results.json").read_text())["values"]
                 for v in ("hard+pcgrad",)} for s in (0, 1)}
    single = {s: {t: json.loads((run_dir / "single" / t / f"seed{s}" / "results.json").read_text())["values"][t]
                  for t in TASKS} for s in (0, 1)}
    row = next(r for r in rows if r["task"] == "y2" and r["variant"] == "hard+pcgrad")
    mean = (cells[0]["hard+pcgrad"]["y2"] + cells[1]["hard+pcgrad"]["y2"]) / 2
    base = (single[0]["y2"] + single[1]["y2"]) / 2
    assert float(row["mean"]) == pytest.approx(mean, rel=1e-5)
    assert float(row["relative_change_pct"]) == pytest.approx(-100 * (mean - base) / base, rel=1e-4)  # mse: lower
    assert row["higher_is_better"] == "false" and row["units"] == "2" and row["verdict"] in ("helps", "hurts",
                                                                                               "within noise")
    assert next(r for r in rows if r["variant"] == "single")["verdict"] == "baseline"
    markdown = (run_dir / "compare.md").read_text()
    assert markdown.count("| y1 | mse | false |") == len(variants)
    assert "## Per variant" in markdown and "| hard+pcgrad | multi | 1 |" in markdown


class FakeClock:
    """perf_counter that moves only when told: training steps and monitors advance it by known amounts."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _tiny_grid(tmp_path: Path, epochs: int = 2, **spec):
    config = yaml.safe_load(_config(tmp_path).read_text())
    config["train"]["epochs"] = epochs
    settings = parse_config(config)
    spec = grid.GridSpec(**{"methods": ["equal"], "architectures": ["hard"], "seeds": [0], **spec})
    return settings, spec


def test_training_seconds_leave_out_analysis_and_count_epochs_before_an_interruption(tmp_path, monkeypatch):
    """A step costs 1 s and a monitor call 5 s on a fake clock: train_seconds counts steps only, resumed or not."""
    import time

    from taskloom.train.tracking import AnalysisMonitor

    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    step = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", lambda self, batch: (setattr(clock, "now", clock.now + 1.0),
                                                                   step(self, batch))[1])
    monkeypatch.setattr(AnalysisMonitor, "before_step", lambda self, trainer, batch, s: setattr(
        clock, "now", clock.now + 5.0))
    settings, spec = _tiny_grid(tmp_path, epochs=3, measure=["conflict"])
    splits = grid.load_data(settings)
    steps = -(-len(splits.train) // settings.train.batch_size)
    run_dir = tmp_path / "run"
    multi = grid.plan_cells(spec, list(TASKS))[-1]
    single = grid.plan_cells(spec, list(TASKS))[0]
    assert multi.kind == "multi" and single.kind == "single"

    class Interrupted(Exception):
        pass

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        grid.train_cell(settings, spec, splits, multi, run_dir, {"epoch": stop_after_two})
    saved = json.loads((run_dir / multi.key / "seconds.json").read_text())["epochs"]
    assert saved == {str(e): {"train": float(steps), "analysis": 5.0 * steps} for e in (1, 2)}
    resumed = grid.train_cell(settings, spec, splits, multi, run_dir)
    assert resumed["train_seconds"] == pytest.approx(3 * steps)  # epochs 1-2 before the interruption, 3 after
    assert resumed["analysis_seconds"] == pytest.approx(3 * 5.0 * steps)
    records = [json.loads(line) for line in (run_dir / multi.key / "metrics.jsonl").read_text().splitlines()]
    assert all(r["seconds"] == pytest.approx(steps) and r["analysis_seconds"] == pytest.approx(5.0 * steps)
               for r in records)
    baseline = grid.train_cell(settings, spec, splits, single, run_dir)
    assert baseline["train_seconds"] == pytest.approx(3 * steps) and baseline["analysis_seconds"] == 0.0


def test_soft_sharing_with_tracking_is_skipped_with_one_warning_per_model(tmp_path, caplog):
    """Soft sharing has no shared parameters: conflict / affinity are undefined, the grid still finishes."""
    settings, spec = _tiny_grid(tmp_path, architectures=["soft"], seeds=[0, 1], measure=["conflict", "affinity"],
                                groups=[2])
    with caplog.at_level("WARNING"):
        compare = grid.run_grid(settings, spec, tmp_path / "run")
    warnings = [r.getMessage() for r in caplog.records if r.name == "taskloom.train.tracking"]
    assert len(warnings) == 2 and {w.split(":")[0] for w in warnings} == {"soft+equal"}  # one per seed's model
    variant = compare["variants"]["soft+equal"]
    assert "no shared parameters" in variant["tracking_skipped"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    soft = [r for r in records if r["model"] == "soft+equal"]
    assert len(soft) == 2 and not any("conflict" in r or "affinity" in r for r in soft)
    assert compare["groupings"] == {} and "groups-2" not in compare["variants"]
    assert "no task groups trained" in compare["grouping_affinity"]["skipped"]
    text = (tmp_path / "run" / "report.html").read_text()
    assert "Not measured for soft+equal" in text and "no task groups trained" in text


def test_groups_go_on_when_an_affinity_pair_was_never_measured(tmp_path, monkeypatch, caplog):
    measured = grid.grid_affinity

    def without_one_pair(run_dir, spec):
        affinity, epochs = measured(run_dir, spec)
        affinity["y1"]["y3"] = None
        return affinity, epochs

    monkeypatch.setattr(grid, "grid_affinity", without_one_pair)
    settings, spec = _tiny_grid(tmp_path, measure=["affinity"], groups=[1, 2])
    with caplog.at_level("WARNING"):
        compare = grid.run_grid(settings, spec, tmp_path / "run")
    assert "y1->y3" in caplog.text and "never measured" in caplog.text
    assert compare["grouping_affinity"]["missing_pairs"] == [["y1", "y3"]]
    assert {"groups-1", "groups-2"} <= set(compare["variants"])
    assert compare["groupings"]["1"]["groups"] == [list(TASKS)]
    assert "Never measured, left out of the grouping: y1&rarr;y3" in (tmp_path / "run" / "report.html").read_text()


def test_a_group_cell_keeps_only_its_tasks_static_weights():
    from taskloom.config import parse_config

    config = parse_config({"data": {"dataset": "synthetic", "options": {"num_tasks": 3}},
                           "balancing": {"method": "static", "options": {"weights": {"y1": 1.0, "y2": 2.0,
                                                                                     "y3": 0.5}}}})
    spec = grid.GridSpec(methods=["static"], architectures=["hard"], seeds=[0], groups=[2])
    cell = grid.Cell("group/y2+y3/seed0", "group", "group", 0, ("y2", "y3"), "hard", "static")
    assert grid.cell_config(config, spec, cell).balancing.options == {"weights": {"y2": 2.0, "y3": 0.5}}
