import math

import pytest
import torch

from taskloom.balancing.auxiliary import scheduled_weight, similarity_gates


@pytest.mark.parametrize("progress", [0.0, 0.25, 0.5, 1.0])
def test_schedules_follow_their_closed_forms(progress):
    assert scheduled_weight("constant", 0.5, progress) == 0.5
    assert scheduled_weight("linear", 0.5, progress) == pytest.approx(0.5 * (1 - progress))
    assert scheduled_weight("cosine", 0.5, progress) == pytest.approx(0.25 * (1 + math.cos(math.pi * progress)))


def test_decaying_schedules_reach_zero_and_cosine_is_half_at_midpoint():
    assert scheduled_weight("linear", 2.0, 1.0) == 0.0
    assert scheduled_weight("cosine", 2.0, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert scheduled_weight("cosine", 2.0, 0.5) == pytest.approx(1.0)


def test_unknown_schedule_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="linear"):
        scheduled_weight("step", 1.0, 0.1)


def test_opposing_auxiliary_gets_zero_and_aligned_keeps_its_weight():
    main = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # sum (1, 1)
    aux = torch.tensor([[-1.0, -1.0], [2.0, 2.0], [1.0, 0.0]])
    assert similarity_gates(main, aux, weighted=False).tolist() == [0.0, 1.0, 1.0]
    weighted = similarity_gates(main, aux, weighted=True)
    assert weighted.tolist() == pytest.approx([0.0, 1.0, 1 / math.sqrt(2)])


def test_delta_m_leaves_auxiliary_tasks_out():
    from taskloom.evaluate.delta import delta_m

    values = {"a": 0.9, "aux": 0.1}
    baselines = {"a": 0.8, "aux": 0.5}
    better = {"a": True, "aux": True}
    assert delta_m(values, baselines, better, auxiliary={"aux"}) == pytest.approx(12.5)
    with pytest.raises(ValueError, match="main task"):
        delta_m(values, baselines, better, auxiliary={"a", "aux"})


def test_task_role_defaults_to_main_and_unknown_role_is_refused():
    from taskloom.task import Task

    assert Task("a", "binary").role == "main"
    assert Task("a", "binary", role="auxiliary").role == "auxiliary"
    with pytest.raises(ValueError, match="'a'.*main or auxiliary"):
        Task("a", "binary", role="helper")


def test_config_role_reaches_the_task():
    from taskloom.config import TaskConfig
    from taskloom.task import Task

    spec = TaskConfig(name="aux", kind="regression", target="age", role="auxiliary")
    assert spec.role == "auxiliary"
    assert TaskConfig(name="y", kind="binary", target="y").role == "main"
    with pytest.raises(ValueError, match="role"):
        TaskConfig(name="y", kind="binary", target="y", role="helper")
    assert Task(spec.name, spec.kind, role=spec.role).role == "auxiliary"


def test_selection_score_ignores_auxiliary_tasks():
    from taskloom.task import Task
    from taskloom.train.score import SelectionScore

    tasks = [Task("a", "binary", main_metric="accuracy"), Task("aux", "regression", role="auxiliary")]
    score = SelectionScore(tasks, baselines={"a": 0.8})
    assert list(score.tasks) == ["a"]
    assert score({"a": {"accuracy": 0.88}, "aux": {"mse": 100.0}}) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="auxiliary"):
        SelectionScore(tasks, score="task", task="aux")
