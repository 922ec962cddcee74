"""taskloom auto over several calls: resume and the final stage, a grouping winner, workers sharing a study."""
from __future__ import annotations

import json

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from taskloom.auto import SearchSpace, run_auto  # noqa: E402
from taskloom.config import parse_config  # noqa: E402

RAW = {"name": "tiny",
       "data": {"dataset": "synthetic", "options": {"n": 200, "d": 6, "num_tasks": 3, "correlation": 0.9}},
       "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
       "optimizer": {"lr": 0.01}, "train": {"epochs": 2, "batch_size": 64, "num_threads": 1}}


def test_a_grouping_winner_with_an_auxiliary_weight_is_trained_as_the_grid_groups(tmp_path):
    tasks = [{"name": "y1", "kind": "regression", "target": "y1"},
             {"name": "y2", "kind": "regression", "target": "y2"},
             {"name": "y3", "kind": "regression", "target": "y3", "role": "auxiliary"}]
    config = parse_config({**RAW, "tasks": tasks, "output_dir": str(tmp_path / "runs")})
    space = SearchSpace(architectures=["hard"], methods=["equal"], groups=[2])
    auto = run_auto(config, space, tmp_path / "run", trials=1, seeds=1, pruner="none")
    trial = auto["trials"][0]
    assert trial["params"]["groups"] == 2 and 1 <= len(trial["groups"]) <= 2
    assert sorted({t for g in trial["groups"] for t in g}) == ["y1", "y2", "y3"]
    compare = json.loads((tmp_path / "run" / "compare.json").read_text())
    assert auto["final"]["variant"] == "groups-2" and "groups-2" in compare["variants"]
    weight = trial["params"]["aux_weight:y3"]
    final = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert final["balancing"] == {"method": "static", "options": {"weights": {"y1": 1.0, "y2": 1.0, "y3": weight}}}
    assert compare["analysis"]["variants"]["groups-2"]["delta_m"]["tasks"] == ["y1", "y2"]  # main tasks only


def test_workers_share_one_study_through_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = parse_config({**RAW, "output_dir": str(tmp_path / "runs")})
    space = dict(architectures=["hard"], methods=["equal", "pcgrad"])
    run_auto(config, SearchSpace(**space), tmp_path / "a", trials=1, storage=storage, final=False)
    auto = run_auto(config, SearchSpace(**space), tmp_path / "b", trials=2, storage=storage, final=False)
    assert len(auto["trials"]) == 3 and not (tmp_path / "b" / "study.db").exists()


def test_resume_keeps_the_final_models_of_an_unchanged_winner_and_retrains_a_changed_one(tmp_path):
    config = parse_config({**RAW, "output_dir": str(tmp_path / "runs")})
    run_dir = tmp_path / "run"
    space = SearchSpace(architectures=["hard"], methods=["equal"])
    run_auto(config, space, run_dir, trials=1, seeds=1, pruner="none")
    results = run_dir / "hard+equal" / "seed0" / "results.json"
    first = results.stat().st_mtime_ns
    never = optuna.pruners.ThresholdPruner(lower=1e9)  # the added trial is pruned: the winner stays
    auto = run_auto(None, None, run_dir, trials=1, resume=True, pruner=never)
    assert auto["counts"] == {"complete": 1, "pruned": 1} and auto["final"]["seeds"] == 1
    assert results.stat().st_mtime_ns == first
    stored = json.loads((run_dir / "auto.json").read_text())
    stored["final"]["params"]["lr"] = 0.5  # as if an earlier winner had another learning rate
    (run_dir / "auto.json").write_text(json.dumps(stored))
    auto = run_auto(None, None, run_dir, trials=1, resume=True, pruner=never)
    assert results.stat().st_mtime_ns != first and (run_dir / "study.db").is_file()
    assert len(auto["trials"]) == 3


def test_resume_with_no_trials_runs_only_the_final_stage(tmp_path):
    config = parse_config({**RAW, "output_dir": str(tmp_path / "runs")})
    run_dir = tmp_path / "run"
    run_auto(config, SearchSpace(architectures=["hard"], methods=["equal"]), run_dir, trials=1, final=False)
    assert not (run_dir / "compare.json").exists()
    auto = run_auto(None, None, run_dir, trials=0, seeds=1, resume=True)
    assert len(auto["trials"]) == 1 and (run_dir / "compare.json").is_file()
    assert auto["final"]["variant"] == "hard+equal" and auto["recommendation"]["choice"] == "single-task"
