"""Bad data is refused before training, naming the split, task, column and row."""
from __future__ import annotations

import pytest
import torch

from taskloom import MultiTaskDataset, MultiTaskModel, Task
from taskloom.config import parse_config
from taskloom.train.runner import load_data
from taskloom.train.trainer import Trainer

TASKS = [Task("digit", "multiclass", 3), Task("size", "regression")]


def _data(n: int = 32) -> MultiTaskDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    return MultiTaskDataset(x, {"digit": torch.randint(0, 3, (n,), generator=generator), "size": x[:, 0].clone()})


def _trainer() -> Trainer:
    torch.manual_seed(0)
    model = MultiTaskModel(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU()), tasks=TASKS, out_features=8)
    return Trainer(model, TASKS, epochs=1, batch_size=8)


def test_a_label_out_of_range_names_the_task_and_row():
    data = _data()
    data.targets["digit"][5] = 7
    with pytest.raises(ValueError, match=r"task 'digit'.*row 5 is not a class index in 0..2"):
        _trainer().fit(data)


def test_a_non_finite_feature_names_the_split_column_and_row():
    data, val = _data(), _data(16)
    val.inputs[3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"validation split: input feature 2 of row 3 is not finite"):
        _trainer().fit(data, val)


def test_a_non_finite_regression_label_names_the_task_and_row():
    data = _data()
    data.targets["size"][9] = float("inf")
    with pytest.raises(ValueError, match=r"task 'size'.*row 9 is not a finite number"):
        _trainer().fit(data)


def test_an_unlabelled_row_may_hold_anything():
    data = _data()
    data.targets["size"][9] = float("nan")
    data.masks["size"][9] = False
    _trainer().fit(data)


def test_an_empty_split_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "t.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(6)))
    config = parse_config({"data": {"dataset": "table", "options": {"path": str(tmp_path / "t.csv")},
                                    "val_fraction": 0.05},
                           "tasks": [{"name": "odd", "kind": "binary", "target": "y"}]})
    with pytest.raises(ValueError, match="the val split is empty; use a smaller validation/test fraction or more data"):
        load_data(config)
