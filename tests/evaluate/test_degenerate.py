"""A split that cannot measure a task: constant labels, too few positives, zero variance; warned and named."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import torch

from taskloom.data.dataset import MultiTaskDataset
from taskloom.evaluate.degenerate import MIN_PER_CLASS, check_splits, label_summary, undefined_reason
from taskloom.task import Task


def _data(**targets):
    n = len(next(iter(targets.values())))
    masks = {name: ~torch.isnan(t) if t.is_floating_point() else torch.ones(n, dtype=torch.bool)
             for name, t in targets.items()}
    return MultiTaskDataset(torch.zeros(n, 2), {k: torch.nan_to_num(v) for k, v in targets.items()}, masks)


def test_counts_and_reasons_follow_the_labels():
    binary, regression = Task("flag", "binary"), Task("size", "regression")
    rare = torch.zeros(100)
    rare[:3] = 1  # 3 positives: AUROC needs 5
    summary = label_summary(_data(flag=rare), binary)
    assert summary["classes"] == {"0": 97, "1": 3} and summary["labelled"] == 100
    assert "3 positives and 97 negatives" in undefined_reason(binary, summary)
    rare[:MIN_PER_CLASS] = 1
    assert undefined_reason(binary, label_summary(_data(flag=rare), binary)) is None
    constant = label_summary(_data(size=torch.full((40,), 2.5)), regression)
    assert constant["distinct"] == 1 and "same value (zero variance)" in undefined_reason(regression, constant)
    one_class = label_summary(_data(flag=torch.ones(30)), binary)
    assert "class 1 (one class)" in undefined_reason(binary, one_class)


def test_missing_labels_do_not_count():
    binary = Task("flag", "binary")
    values = torch.tensor([1.0] * 6 + [0.0] * 6 + [float("nan")] * 20)
    summary = label_summary(_data(flag=values), binary)
    assert summary["labelled"] == 12 and summary["classes"] == {"0": 6, "1": 6}


def test_check_splits_warns_naming_task_split_and_count(caplog):
    binary, regression = Task("flag", "binary"), Task("size", "regression")
    flag = torch.tensor([1.0, 0.0] * 20)
    splits = SimpleNamespace(val=_data(flag=flag, size=torch.linspace(0, 1, 40)),
                             test=_data(flag=flag, size=torch.zeros(40)))
    with caplog.at_level(logging.WARNING):
        result = check_splits(splits, [binary, regression])
    assert result["test"]["size"]["defined"] is False and result["val"]["size"]["defined"] is True
    assert result["test"]["flag"]["defined"] is True
    assert "task 'size'" in caplog.text and "test split" in caplog.text and "all 40 labelled targets" in caplog.text
