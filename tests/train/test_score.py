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
