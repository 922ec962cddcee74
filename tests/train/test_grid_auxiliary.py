"""Auxiliary ablations in the grid: "without X" variants trained, and "does X help?" verdicts recomputed by hand."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_output import run_cli
from scipy import stats

from taskloom.config import parse_config
from taskloom.train.grid import GridSpec, cell_config, options_for_tasks, plan_cells, spec_from_config


@pytest.fixture
def table(tmp_path):
    """Two main tasks; ``yhat`` is the main target ``y`` plus small noise, ``f2c`` a copy of a feature."""
    rng = np.random.default_rng(3)
    n = 300
    frame = pd.DataFrame({"f1": rng.normal(size=n), "f2": rng.normal(size=n)})
    frame["y"] = frame.f1 - 0.5 * frame.f2 + 0.3 * rng.normal(size=n)
    frame["click"] = (frame.f1 + 0.5 * rng.normal(size=n) > 0).astype(float)
    frame["yhat"] = frame.y + 0.05 * rng.normal(size=n)
    frame["f2c"] = frame.f2
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def _config(tmp_path, table):
    config = {"name": "aux", "data": {"dataset": "table", "options": {"path": str(table), "features": ["f1", "f2"]}},
              "tasks": [{"name": "y", "kind": "regression", "target": "y"},
                        {"name": "click", "kind": "binary", "target": "click"},
                        {"name": "yhat", "kind": "regression", "target": "yhat", "role": "auxiliary"},
                        {"name": "f2c", "kind": "regression", "target": "f2c", "role": "auxiliary"}],
              "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
              "train": {"epochs": 2, "batch_size": 64, "num_threads": 1}, "output_dir": str(tmp_path / "runs")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _main(args):
    return run_cli(args, width=100)


def _run_dir(out: str) -> Path:
    return Path(out.split("run directory:")[1].split()[0])


def test_ablations_are_planned_per_auxiliary_and_all_together():
    spec = GridSpec(methods=["equal"], architectures=["hard"], seeds=[0, 1])
    names = ["a", "x", "b", "z"]
    assert spec.ablations(names, ["z", "x"]) == [("hard+equal-without-x", ("x",)), ("hard+equal-without-z", ("z",)),
                                                 ("hard+equal-no-auxiliaries", ("x", "z"))]
    assert spec.ablations(names, ["x"]) == [("hard+equal-without-x", ("x",))]  # one auxiliary: no "no auxiliaries"
    assert spec.ablations(names, []) == [] and spec.ablations(["x"], ["x"]) == []  # nothing to judge
    cells = [c for c in plan_cells(spec, names, ["x"]) if c.kind == "ablation"]
    assert [(c.key, c.tasks) for c in cells] == [("hard+equal-without-x/seed0", ("a", "b", "z")),
                                                 ("hard+equal-without-x/seed1", ("a", "b", "z"))]
    spec.auxiliary_ablations = False
    assert not [c for c in plan_cells(spec, names, ["x"]) if c.kind == "ablation"]


def test_train_with_baselines_ablates_and_plain_train_does_not():
    base = {"tasks": [{"name": "a", "kind": "regression", "target": "a"}]}
    assert spec_from_config(parse_config(base), baselines=True).auxiliary_ablations is True
    assert spec_from_config(parse_config(base), baselines=False).auxiliary_ablations is False
    off = parse_config({**base, "train": {"auxiliary_ablations": False}})
    assert spec_from_config(off, baselines=True).auxiliary_ablations is False


def _hand_interval(with_values, without_values, with_reps, without_reps, higher):
    """The paired interval of verdict.py's module docstring, written out: seeds + test-row bootstrap."""
    sign = 1.0 if higher else -1.0
    base = float(np.mean(without_values))
    estimate = 100 * sign * (np.mean(with_values) - base) / abs(base)
    per_seed = [100 * sign * (w - o) / abs(base) for w, o in zip(with_values, without_values)]
    v_seed = np.var(per_seed, ddof=1) / len(per_seed)
    reps = 100 * sign * (np.mean(with_reps, axis=0) - np.mean(without_reps, axis=0)) / np.abs(
        np.mean(without_reps, axis=0))
    v_rows = np.var(reps[np.isfinite(reps)], ddof=1)
    half = stats.t.ppf(0.975, len(per_seed) - 1) * math.sqrt(v_seed + v_rows)
    return estimate, estimate - half, estimate + half


def _replicates(run_dir: Path, cell: str, task: str) -> np.ndarray:
    with np.load(run_dir / cell / "bootstrap.npz") as stored:
        return stored["replicates"][list(stored["tasks"]).index(task)]


def test_compare_trains_ablations_and_judges_each_auxiliary(tmp_path, table):
    code, out = _main(["compare", str(_config(tmp_path, table)), "--seeds", "2"])
    assert code == 0
    run_dir = _run_dir(out)
    compare = json.loads((run_dir / "compare.json").read_text())
    ablations = {n: v for n, v in compare["variants"].items() if v["kind"] == "ablation"}
    assert sorted(ablations) == ["hard+equal-no-auxiliaries", "hard+equal-without-f2c", "hard+equal-without-yhat"]
    assert ablations["hard+equal-no-auxiliaries"]["without"] == ["yhat", "f2c"]
    assert all(v["reference"] == "hard+equal" for v in ablations.values())
    without = json.loads((run_dir / "hard+equal-without-yhat" / "seed1" / "results.json").read_text())
    assert sorted(without["values"]) == ["click", "f2c", "y"]  # trained on the task list minus yhat

    effects = {e["variant"]: e for e in compare["analysis"]["auxiliary"]}
    assert [effects[n]["auxiliary"] for n in sorted(effects)] == ["all auxiliaries", "f2c", "yhat"]
    effect = effects["hard+equal-without-yhat"]
    assert sorted(effect["tasks"]) == ["click", "y"]  # main tasks only
    for task in ("y", "click"):
        higher = compare["tasks"][task]["higher_is_better"]
        cells = [(f"hard+equal/seed{s}", f"hard+equal-without-yhat/seed{s}") for s in (0, 1)]
        results = [[json.loads((run_dir / c / "results.json").read_text())["values"][task] for c in pair]
                   for pair in cells]
        with_values, without_values = [r[0] for r in results], [r[1] for r in results]
        with_reps = [_replicates(run_dir, a, task) for a, _ in cells]
        without_reps = [_replicates(run_dir, b, task) for _, b in cells]
        estimate, low, high = _hand_interval(with_values, without_values, with_reps, without_reps, higher)
        row = effect["tasks"][task]
        assert row["with"] == pytest.approx(np.mean(with_values))
        assert row["without"] == pytest.approx(np.mean(without_values))
        assert row["difference"] == pytest.approx(np.mean(with_values) - np.mean(without_values))
        assert (row["relative_change"], row["low"], row["high"]) == pytest.approx((estimate, low, high))
        assert row["verdict"] == ("helps" if low > 0 else "hurts" if high < 0 else "no evidence")
    dm = effect["delta_m"]
    assert dm["tasks"] == ["click", "y"] and dm["left_out"] == {"yhat": "auxiliary task", "f2c": "auxiliary task"}
    assert dm["mean"] == pytest.approx(np.mean([effect["tasks"][t]["relative_change"] for t in ("click", "y")]))

    rows = list(csv.DictReader((run_dir / "compare-auxiliary.csv").open()))
    assert len(rows) == 3 * 3  # per auxiliary ablation: two main tasks and delta-m
    assert {r["verdict"] for r in rows} <= {"helps", "hurts", "no evidence"}
    assert "## Auxiliary tasks" in (run_dir / "compare.md").read_text()
    assert "Auxiliary tasks" in (run_dir / "report.html").read_text()
    assert "auxiliary tasks: hard+equal with vs without each" in out


def test_ablations_can_be_switched_off(tmp_path, table):
    code, out = _main(["compare", str(_config(tmp_path, table)), "--seeds", "1", "--no-auxiliary-ablations"])
    assert code == 0
    run_dir = _run_dir(out)
    compare = json.loads((run_dir / "compare.json").read_text())
    assert not [v for v in compare["variants"].values() if v["kind"] == "ablation"]
    assert "auxiliary" not in compare["analysis"] and not (run_dir / "compare-auxiliary.csv").exists()
    assert compare["grid"]["auxiliary_ablations"] is False


def test_train_with_baselines_judges_auxiliaries_without_claims_from_one_seed(tmp_path, table):
    code, out = _main(["train", str(_config(tmp_path, table)), "--baselines", "--epochs", "1"])
    assert code == 0
    compare = json.loads((_run_dir(out) / "compare.json").read_text())
    effects = compare["analysis"]["auxiliary"]
    assert len(effects) == 3 and compare["seeds"] == [0]
    rows = [row for effect in effects for row in effect["tasks"].values()]
    assert all(row["verdict"] == "no evidence" and row["covers"].startswith("test rows only") for row in rows)
    code, out = _main(["train", str(_config(tmp_path, table)), "--epochs", "1"])  # no baselines: one model
    compare = json.loads((_run_dir(out) / "compare.json").read_text())
    assert list(compare["variants"]) == ["hard+equal"] and "auxiliary" not in compare["analysis"]


def test_architecture_options_naming_the_left_out_task_are_restricted(tmp_path, table):
    raw = yaml.safe_load(_config(tmp_path, table).read_text())
    raw["model"] = {"architecture": "low_level", "options": {"depths": {"yhat": 3, "y": 5}},
                    "trunk": {"name": "mlp", "options": {"hidden": [8, 8]}}}
    raw["tasks"] = raw["tasks"][:3]  # y, click and the auxiliary yhat
    config = parse_config(raw)
    spec = GridSpec(methods=["equal"], architectures=["low_level"], seeds=[0])
    (cell,) = [c for c in plan_cells(spec, ["y", "click", "yhat"], ["yhat"]) if c.kind == "ablation"]
    assert cell_config(config, spec, cell).model.options == {"depths": {"y": 5}}
    (full,) = [c for c in plan_cells(spec, ["y", "click", "yhat"], ["yhat"]) if c.kind == "multi"]
    assert cell_config(config, spec, full).model.options == {"depths": {"yhat": 3, "y": 5}}
    assert options_for_tasks({"order": ["y", "yhat"], "embedding_dim": 8, "mode": "sum"}, ["y", "yhat"], ["y"]) == {
        "order": ["y"], "embedding_dim": 8, "mode": "sum"}
    path = tmp_path / "low.yaml"
    path.write_text(yaml.safe_dump(raw))
    code, out = _main(["compare", str(path), "--seeds", "1", "--epochs", "1"])
    assert code == 0  # the ablation trained with depths {y: 5}, where {yhat: 3, y: 5} would be refused
    ablation = json.loads((_run_dir(out) / "compare.json").read_text())["variants"]["low_level+equal-without-yhat"]
    assert sorted(ablation["values"]["0"]) == ["click", "y"]
