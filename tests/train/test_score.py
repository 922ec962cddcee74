import pytest

from taskloom import Task
from taskloom.train.score import SelectionScore

TASKS = [Task("acc", "multiclass", 3), Task("err", "regression")]


def test_mean_relative_change_against_given_baselines():
    score = SelectionScore(TASKS, baselines={"acc": 0.8, "err": 2.0})
    # acc +10 %, err 1.5 vs 2.0 is 25 % better (lower is better) -> mean 17.5 %
    assert score({"acc": {"accuracy": 0.88}, "err": {"mse": 1.5}}) == pytest.approx(17.5)


def test_first_evaluation_is_the_baseline_when_none_is_given():
    score = SelectionScore(TASKS)
    assert score({"acc": {"accuracy": 0.5}, "err": {"mse": 4.0}}) == 0.0
    assert score({"acc": {"accuracy": 0.6}, "err": {"mse": 2.0}}) == pytest.approx((20 + 50) / 2)


def test_weighted_and_single_task_scores():
    weighted = SelectionScore(TASKS, "weighted", weights={"acc": 3, "err": 1}, baselines={"acc": 0.5, "err": 1.0})
    assert weighted({"acc": {"accuracy": 0.55}, "err": {"mse": 1.2}}) == pytest.approx((3 * 10 - 20) / 4)
    assert SelectionScore(TASKS, "task", task="err")({"err": {"mse": 0.3}}) == -0.3
    with pytest.raises(ValueError, match="selection.task 'nope'"):
        SelectionScore(TASKS, "task", task="nope")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_metric_gets_minus_infinity_and_never_becomes_a_baseline(bad):
    for score in (SelectionScore(TASKS), SelectionScore(TASKS, "weighted", weights={"acc": 1, "err": 1}),
                  SelectionScore(TASKS, baselines={"acc": 0.8, "err": 2.0})):
        before = dict(score.baselines)
        assert score({"acc": {"accuracy": 0.9}, "err": {"mse": bad}}) == float("-inf")
        assert score.baselines == before  # the diverged evaluation set no baseline
    assert SelectionScore(TASKS, "task", task="err")({"err": {"mse": bad}}) == float("-inf")
    assert SelectionScore(TASKS, "task", task="acc")({"acc": {"accuracy": 0.5}, "err": {"mse": bad}}) == float("-inf")
    # after a diverged first evaluation, the first finite one is the baseline (score 0), then changes count from it
    score = SelectionScore(TASKS)
    score({"acc": {"accuracy": bad}, "err": {"mse": 1.0}})
    assert score({"acc": {"accuracy": 0.5}, "err": {"mse": 4.0}}) == 0.0
    assert score({"acc": {"accuracy": 0.6}, "err": {"mse": 2.0}}) == pytest.approx((20 + 50) / 2)


def test_a_huge_but_finite_error_is_scored_by_its_relative_change():
    score = SelectionScore(TASKS, baselines={"acc": 0.5, "err": 2.0})
    assert score({"acc": {"accuracy": 0.5}, "err": {"mse": 2.9e23}}) == pytest.approx((0 - 100 * (2.9e23 - 2) / 2) / 2)


def test_the_score_says_what_it_measures():
    assert SelectionScore(TASKS, "task", task="err").describe() == "err mse (lower is better)"
    described = SelectionScore(TASKS, baselines={"acc": 0.5, "err": 2.0}).describe()
    assert described == "mean % change of acc accuracy, err mse vs single-task baselines"
