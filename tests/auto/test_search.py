"""taskloom auto's search: study storage, resume, trial limit, pruning, validation only (tiny generated data)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from taskloom.auto import SearchSpace, run_auto  # noqa: E402
from taskloom.auto import run as auto_run  # noqa: E402
from taskloom.config import parse_config  # noqa: E402
from taskloom.train.trainer import Trainer  # noqa: E402


def tiny_config(tmp_path: Path, **extra) -> object:
    raw = {"name": "tiny",
           "data": {"dataset": "synthetic", "options": {"n": 200, "d": 6, "num_tasks": 3, "correlation": 0.9}},
           "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
           "optimizer": {"lr": 0.01}, "train": {"epochs": 2, "batch_size": 64, "num_threads": 1},
           "output_dir": str(tmp_path / "runs"), **extra}
    return parse_config(raw)


SPACE = dict(architectures=["hard", "mmoe"], methods=["equal", "pcgrad"])


def test_search_writes_a_study_db_and_auto_json_and_stops_at_the_trial_limit(tmp_path):
    run_dir = tmp_path / "auto"
    auto = run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), run_dir, trials=3, final=False)
    assert (run_dir / "study.db").is_file()
    stored = json.loads((run_dir / "auto.json").read_text())
    assert len(stored["trials"]) == 3 == len(auto["trials"])
    study = optuna.load_study(study_name=stored["study"], storage=stored["storage"])
    assert len(study.trials) == 3
    for trial in stored["trials"]:
        assert trial["params"]["architecture"] in SPACE["architectures"]
        assert trial["params"]["balancing"] in SPACE["methods"]
        assert 1e-4 <= trial["params"]["lr"] <= 1e-1
        assert trial["state"] in ("complete", "pruned")
    complete = [t for t in stored["trials"] if t["state"] == "complete"]
    assert stored["winner"]["value"] == max(t["value"] for t in complete)
    bests = [p["best"] for p in stored["best_so_far"]]
    assert bests == sorted(bests) and bests[-1] == stored["winner"]["value"]
    assert "final" not in stored or stored["final"] is None


def test_resume_adds_trials_to_the_same_study(tmp_path):
    run_dir = tmp_path / "auto"
    run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), run_dir, trials=2, final=False)
    before = (run_dir / "study.db").stat().st_ino
    auto = run_auto(None, None, run_dir, trials=1, resume=True, final=False)
    assert len(auto["trials"]) == 3 and [t["number"] for t in auto["trials"]] == [0, 1, 2]
    assert (run_dir / "study.db").stat().st_ino == before
    assert auto["space"]["architectures"] == SPACE["architectures"]  # the stored space is kept


def test_a_new_search_refuses_a_directory_that_holds_one(tmp_path):
    run_dir = tmp_path / "auto"
    run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), run_dir, trials=1, final=False)
    with pytest.raises(ValueError, match="--resume"):
        run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), run_dir, trials=1, final=False)


def test_the_search_never_evaluates_the_test_split(tmp_path, monkeypatch):
    loaded, evaluated = [], []
    load = auto_run.load_data
    monkeypatch.setattr(auto_run, "load_data", lambda config: loaded.append(load(config)) or loaded[-1])
    evaluate = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self, data, *a, **k: evaluated.append(data)
                        or evaluate(self, data, *a, **k))
    run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), tmp_path / "auto", trials=2, final=False)
    splits = loaded[0]
    assert any(data is splits.val for data in evaluated)
    assert all(data is not splits.test for data in evaluated)


def test_a_pruned_trial_is_recorded_as_pruned(tmp_path):
    # a score threshold no model reaches: every trial is pruned at its first report (epoch 1)
    pruner = optuna.pruners.ThresholdPruner(lower=1e9)
    auto = run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), tmp_path / "auto", trials=2, pruner=pruner)
    assert auto["counts"] == {"pruned": 2}
    assert all(list(t["intermediate"]) == ["1"] for t in auto["trials"])
    assert auto["winner"] is None and "recommendation" not in auto  # no complete trial, no final stage
    assert "omitted" in auto["importances"] and "2 complete" in auto["importances"]["omitted"]


def test_unknown_candidates_and_a_missing_limit_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--architectures: unknown architecture 'nope'"):
        run_auto(tiny_config(tmp_path), SearchSpace(architectures=["nope"]), tmp_path / "a", trials=1)
    with pytest.raises(ValueError, match="--trials N or --budget"):
        run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), tmp_path / "b")


def test_a_spent_budget_stops_the_search_before_the_trial_limit(tmp_path, caplog):
    # a budget no machine can train the single-task validation models in: no trial starts
    auto = run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), tmp_path / "auto", trials=50, budget=1e-9)
    assert auto["trials"] == [] and auto["winner"] is None
    assert "no trial ran" in caplog.text


def test_a_resumed_study_refuses_other_candidates_and_follows_a_moved_run_directory(tmp_path):
    run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), tmp_path / "auto", trials=1, final=False)
    with pytest.raises(ValueError, match="--methods: a resumed study keeps its candidates"):
        run_auto(None, SearchSpace(architectures=SPACE["architectures"], methods=["equal"]), tmp_path / "auto",
                 trials=1, resume=True, final=False)
    (tmp_path / "auto").rename(tmp_path / "moved")
    auto = run_auto(None, None, tmp_path / "moved", trials=1, resume=True, final=False)
    assert len(auto["trials"]) == 2 and str(tmp_path / "moved" / "study.db") in auto["storage"]


def test_static_weighting_without_weights_to_search_or_keep_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--methods: static needs per-task weights"):
        run_auto(tiny_config(tmp_path), SearchSpace(architectures=["hard"], methods=["static"]), tmp_path / "a",
                 trials=1)


def test_a_named_pruner_lets_the_first_trials_complete():
    from taskloom.auto.search import build_pruner

    # halving with 8 epochs checks at epoch 1: a trial far below the one finished rival would be pruned
    study = optuna.create_study(direction="maximize", pruner=build_pruner("halving", 8, startup=2))

    def objective(trial):
        base = 100.0 if trial.number == 0 else 0.0  # trial 0 is best at every epoch
        for epoch in range(1, 9):
            trial.report(base + epoch, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return base + 8

    study.optimize(objective, n_trials=4)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert sorted(study.trials[2].intermediate_values) == [1]  # pruned at the first rung, epoch 8 // 9 -> 1


def test_hyperband_runs_and_an_unknown_pruner_is_refused(tmp_path):
    auto = run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), tmp_path / "auto", trials=2, pruner="hyperband",
                    final=False)
    assert auto["counts"] == {"complete": 2}  # a named pruner prunes nothing before 4 trials completed
    with pytest.raises(ValueError, match="--pruner: unknown pruner 'asha'"):
        run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), tmp_path / "other", trials=1, pruner="asha")
    assert not (tmp_path / "other").exists()


def test_a_resume_changes_only_the_options_it_names(tmp_path):
    run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), tmp_path / "auto", trials=1, final=False)
    auto = run_auto(None, {"lr": (1e-3, 2e-3)}, tmp_path / "auto", trials=1, resume=True, final=False)
    assert auto["space"]["architectures"] == SPACE["architectures"] and auto["space"]["lr"] == [1e-3, 2e-3]
    assert 1e-3 <= auto["trials"][-1]["params"]["lr"] <= 2e-3
    assert all(isinstance(note, str) for note in auto["importances"].get("notes", []))
    with pytest.raises(ValueError, match="unknown options \\['budget'\\]"):
        run_auto(None, {"budget": 3}, tmp_path / "auto", trials=1, resume=True, final=False)


def test_tpe_models_the_results_after_a_third_of_the_trials():
    """Optuna's fixed 10 random start-up trials would make a search of 10 trials random throughout."""
    from taskloom.auto.search import open_study, startup_trials
    assert [startup_trials(n) for n in (1, 6, 10, 12, 30, 100)] == [2, 2, 3, 4, 10, 10]
    assert startup_trials(None) == 10  # a budget alone
    study = open_study("sqlite:///:memory:", 0, optuna.pruners.NopPruner(), startup=3)
    assert study.sampler._n_startup_trials == 3


def test_each_trial_end_is_reported_with_the_state_and_value_the_study_records(tmp_path):
    ended = []
    auto = run_auto(tiny_config(tmp_path), SearchSpace(**SPACE), tmp_path / "auto", trials=3, final=False,
                    on_trial_end=lambda number, state, value, epoch: ended.append((number, state, value)))
    assert ended == [(t["number"], t["state"], t["value"]) for t in auto["trials"]]
