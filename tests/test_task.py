import pytest
import torch

from taskloom import Task
from taskloom.task import TASK_KINDS


def test_each_kind_has_a_default_head_loss_metrics_and_direction():
    for kind, outputs in [("binary", 1), ("multiclass", 3), ("multilabel", 4), ("regression", 2)]:
        task = Task("t", kind, outputs)
        head = task.build_head(5)
        assert head(torch.zeros(2, 5)).shape == (2, outputs)
        assert task.main_metric in TASK_KINDS.get(kind).higher_is_better
    assert Task("r", "regression").higher_is_better is False
    assert Task("c", "multiclass", 3).higher_is_better is True


def test_task_validation_names_the_task():
    with pytest.raises(ValueError, match="'digit'.*num_outputs >= 2"):
        Task("digit", "multiclass", 1)
    with pytest.raises(ValueError, match="unknown kind 'ranking'"):
        Task("x", "ranking")
    with pytest.raises(ValueError, match="'x'.*main_metric 'auroc'"):
        Task("x", "regression", main_metric="auroc")
    with pytest.raises(ValueError, match="class_weights has 2 entries for 3 classes"):
        Task("x", "multiclass", 3, class_weights=[1, 2])


def test_label_checks_name_task_and_row():
    task = Task("digit", "multiclass", 10)
    target = torch.tensor([1, 3, 12, 4])
    mask = torch.tensor([True, True, True, True])
    with pytest.raises(ValueError, match=r"'digit'.*row 2 is not a class index in 0..9"):
        task.kind_spec.check_labels(target, mask, task)
    mask[2] = False  # an unlabelled row may hold anything
    task.kind_spec.check_labels(target, mask, task)
    binary = Task("spam", "binary")
    with pytest.raises(ValueError, match=r"'spam'.*row 1 is not 0 or 1"):
        binary.kind_spec.check_labels(torch.tensor([0.0, 2.0]), torch.tensor([True, True]), binary)
    regression = Task("price", "regression")
    with pytest.raises(ValueError, match=r"'price'.*row 0 is not a finite number"):
        regression.kind_spec.check_labels(torch.tensor([float("inf"), 1.0]), torch.tensor([True, True]), regression)
