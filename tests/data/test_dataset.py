"""In-memory data sets and their batches: every batch carries each task's mask, as the data holds it now."""
from __future__ import annotations

import torch

from taskloom import Batch, Condition, MultiTaskDataset, Task, task_losses


def _data() -> MultiTaskDataset:
    x = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    targets = {"a": torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0]), "b": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])}
    return MultiTaskDataset(x, targets, {"a": torch.tensor([True, True, False, True, False, True])})


def test_batch_mask_is_the_datas_mask_or_all_true():
    data = _data()
    batch = data.batch(torch.tensor([4, 1, 2]))
    assert batch.mask("a").tolist() == [False, True, False]
    assert batch.mask("b").tolist() == [True, True, True] and batch.mask("b").dtype == torch.bool
    labelled_only = data.batch(torch.tensor([0, 1, 3]))
    assert labelled_only.mask("a").tolist() == [True, True, True]


def test_a_mask_changed_after_construction_reaches_the_batches():
    data = _data()
    data.masks["b"][3] = False  # b was labelled on every row when the data set was built
    data.targets["b"][3] = float("nan")
    data.masks["a"] = torch.ones(6, dtype=torch.bool)  # a replaced mask counts too
    batch = data.batch(torch.arange(6))
    assert batch.mask("b").tolist() == [True, True, True, False, True, True]
    assert batch.mask("a").all()
    outputs = {"a": torch.zeros(6, 1), "b": torch.zeros(6, 1)}
    loss = task_losses(outputs, batch, {"a": Task("a", "binary"), "b": Task("b", "regression")})["b"]
    assert loss.item() == (1 + 4 + 9 + 25 + 36) / 5  # the mean squared error over the five labelled rows


def test_a_condition_applied_after_construction_reaches_the_batches():
    data = _data()
    data.apply_conditions([Task("b", "regression", only_where=Condition("a", 1))])
    assert data.batch(torch.arange(6)).mask("b").tolist() == [False, True, False, False, False, False]


def test_a_hand_made_batch_without_masks_is_labelled_everywhere():
    batch = Batch(torch.zeros(3, 1), {"t": torch.zeros(3, 4)})
    assert batch.mask("t").tolist() == [True, True, True]
