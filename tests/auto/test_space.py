"""The search space: auxiliary weights become static balancing, budgets parse, bad ranges are refused."""
from __future__ import annotations

import pytest

from taskloom.auto.space import SearchSpace, auxiliary_weights, default_space, suggest, trial_config
from taskloom.auto.run import parse_budget
from taskloom.config import parse_config

optuna = pytest.importorskip("optuna")

CONFIG = parse_config({
    "data": {"dataset": "synthetic", "options": {"n": 200, "d": 6, "num_tasks": 3}},
    "tasks": [{"name": "y1", "kind": "regression", "target": "y1"},
              {"name": "y2", "kind": "regression", "target": "y2"},
              {"name": "y3", "kind": "regression", "target": "y3", "role": "auxiliary"}],
})


def test_an_auxiliary_weight_is_searched_with_equal_weighting_and_becomes_static_weights():
    space = SearchSpace(architectures=["mmoe"], methods=["equal"], auxiliary=["y3"])
    trial = optuna.trial.FixedTrial({"architecture": "mmoe", "balancing": "equal", "lr": 0.02,
                                     "aux_weight:y3": 0.25})
    params = suggest(trial, space)
    assert auxiliary_weights(params) == {"y3": 0.25}
    config = trial_config(CONFIG, params, ["y1", "y2", "y3"])
    assert config.balancing.method == "static"
    assert config.balancing.options == {"weights": {"y1": 1.0, "y2": 1.0, "y3": 0.25}}
    assert config.model.architecture == "mmoe" and config.optimizer.lr == 0.02


def test_a_gradient_method_gets_no_auxiliary_weight():
    space = SearchSpace(architectures=["hard"], methods=["pcgrad"], auxiliary=["y3"])
    params = suggest(optuna.trial.FixedTrial({"architecture": "hard", "balancing": "pcgrad", "lr": 0.001}), space)
    assert auxiliary_weights(params) == {}
    config = trial_config(CONFIG, params, ["y1", "y2", "y3"])
    assert config.balancing.method == "pcgrad" and config.balancing.options == {}


def test_groups_are_searched_only_with_two_or_more_candidates_and_turn_on_affinity():
    one = suggest(optuna.trial.FixedTrial({"architecture": "hard", "balancing": "equal", "lr": 0.01}),
                  SearchSpace(architectures=["hard"], methods=["equal"]))
    assert "groups" not in one
    two = suggest(optuna.trial.FixedTrial({"architecture": "hard", "balancing": "equal", "lr": 0.01, "groups": 2}),
                  SearchSpace(architectures=["hard"], methods=["equal"], groups=[1, 2]))
    assert two["groups"] == 2
    assert trial_config(CONFIG, two, ["y1", "y2", "y3"]).tracking.measure == ["affinity"]


@pytest.mark.parametrize("text, seconds", [("90s", 90.0), ("30m", 1800.0), ("1.5h", 5400.0)])
def test_budgets_parse_to_seconds(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["30", "0m", "ten minutes", "-5m"])
def test_a_budget_without_a_unit_or_positive_amount_is_refused(text):
    with pytest.raises(ValueError, match="--budget"):
        parse_budget(text)


def test_bad_ranges_and_names_are_refused_naming_the_option():
    with pytest.raises(ValueError, match="--lr"):
        SearchSpace(lr=(0.1, 0.01)).check(2)
    with pytest.raises(ValueError, match="--methods: unknown balancing method 'nope'"):
        SearchSpace(methods=["nope"]).check(2)
    with pytest.raises(ValueError, match="--groups"):
        SearchSpace(groups=[0]).check(3)
    with pytest.raises(ValueError, match="at least 3 tasks"):
        SearchSpace(groups=[1, 2]).check(2)
    space = SearchSpace(methods=["ew", "uw"])
    space.check(2)
    assert space.methods == ["equal", "uncertainty"]


def test_a_group_config_keeps_the_weights_and_selection_of_its_own_tasks_only():
    from taskloom.auto.search import group_config

    params = {"architecture": "hard", "balancing": "equal", "lr": 0.01, "aux_weight:y3": 0.5}
    settings = trial_config(CONFIG, params, ["y1", "y2", "y3"])
    grouped = group_config(settings, ["y2", "y3"])
    assert grouped.balancing.options == {"weights": {"y2": 1.0, "y3": 0.5}}
    assert grouped.tracking.measure == []
    data = settings.model_dump()
    data["selection"] = {"score": "task", "task": "y1"}
    grouped = group_config(parse_config(data), ["y2", "y3"])
    assert grouped.selection.score == "mean_relative" and grouped.selection.task is None


def test_branching_is_a_default_candidate_only_where_the_trunk_can_be_split():
    assert default_space(CONFIG).architectures == ["hard", "mmoe", "ple", "branching"]
    image = parse_config({"data": {"dataset": "multimnist"}, "model": {"trunk": {"name": "lenet"}}})
    assert default_space(image).architectures == ["hard", "mmoe", "ple"]
    assert SearchSpace().architectures == ["hard", "mmoe", "ple"]  # the dataclass default is not widened
