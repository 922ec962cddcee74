"""Yeast from river: 2,417 rows, 103 standardized features, 14 labels as binary tasks or one multilabel task."""
from __future__ import annotations

import torch

from taskloom.data.datasets import load_dataset
from taskloom.task import Task


def test_fourteen_binary_tasks_standardized_on_train():
    splits = load_dataset("yeast", seed=0)
    assert len(splits.tasks) == 14 and splits.tasks[0].name == "class1"
    assert sum(splits.info["sizes"].values()) == 2417
    assert splits.input_shape == (103,)
    x = splits.train.inputs
    assert torch.allclose(x.mean(0), torch.zeros(103), atol=1e-4)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(103), atol=1e-3)
    assert not torch.allclose(splits.test.inputs.mean(0), torch.zeros(103), atol=1e-4)


def test_multilabel_matches_binary_tasks():
    binary = load_dataset("yeast", seed=2)
    multi = load_dataset("yeast", seed=2, multilabel=True)
    labels = multi.train.targets["labels"]
    assert labels.shape == (len(multi.train), 14)
    stacked = torch.stack([binary.train.targets[f"class{k}"] for k in range(1, 15)], 1)
    assert torch.equal(labels, stacked)


def test_task_names_a_label_column():
    splits = load_dataset("yeast", tasks=[Task("energy", "binary", target="Class3")])
    assert list(splits.train.targets) == ["energy"]
