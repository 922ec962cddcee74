"""Reference scores: the trivial predictor against hand-computed values, the linear model on data it solves."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from taskloom.data.dataset import MultiTaskDataset
from taskloom.evaluate.references import linear_scores, trivial_scores
from taskloom.task import Task


def test_the_trivial_predictor_is_the_prior_or_the_training_mean():
    binary, regression, classes = Task("b", "binary"), Task("r", "regression"), Task("c", "multiclass", num_outputs=3)
    train = MultiTaskDataset(torch.zeros(10, 1), {"b": torch.tensor([1.0] * 3 + [0.0] * 7),
                                                  "r": torch.arange(10.0), "c": torch.tensor([2] * 6 + [0] * 4)})
    test = MultiTaskDataset(torch.zeros(4, 1), {"b": torch.tensor([1.0, 0.0, 0.0, 1.0]),
                                                "r": torch.tensor([0.0, 2.0, 4.0, 6.0]), "c": torch.tensor([2, 2, 1, 0])})
    scores = trivial_scores(train, test, binary)
    assert scores["auroc"] == 0.5 and scores["accuracy"] == 0.5  # a constant score; predicts the majority 0
    mean = 4.5  # the training mean of 0..9
    assert trivial_scores(train, test, regression)["mse"] == pytest.approx(np.mean((np.array([0, 2, 4, 6]) - mean) ** 2))
    assert trivial_scores(train, test, classes)["accuracy"] == 0.5  # always class 2


def test_the_linear_reference_solves_linear_data():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(300, 4))).float()
    label = (x[:, 0] - x[:, 2] > 0).float()
    value = 3 * x[:, 1] + 1
    data = MultiTaskDataset(x, {"b": label, "r": value})
    train, test = data.subset(torch.arange(200)), data.subset(torch.arange(200, 300))
    assert linear_scores(train, test, Task("b", "binary"))["accuracy"] > 0.95
    assert linear_scores(train, test, Task("r", "regression"))["r2"] > 0.999


def test_no_linear_reference_for_images():
    images = MultiTaskDataset(torch.zeros(6, 1, 4, 4), {"b": torch.tensor([0.0, 1.0] * 3)})
    assert linear_scores(images, images, Task("b", "binary")) is None
