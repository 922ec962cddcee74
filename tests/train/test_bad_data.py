"""Bad data is refused before training, naming the split, task, column and row."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from taskloom import DataSplits, MultiTaskDataset, MultiTaskModel, Task
from taskloom.data import split_indices
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
    data.masks["size"][9] = False  # masked after construction, in place
    trainer = _trainer()
    history = trainer.fit(data)
    assert all(math.isfinite(loss) for loss in history.records[-1]["train_loss"].values())
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())


def test_a_label_error_names_the_split():
    data, val = _data(), _data(16)
    val.targets["digit"][4] = 3
    with pytest.raises(ValueError, match=r"^validation split, task 'digit' \(target 'digit'\): label at row 4 is "
                                         r"not a class index in 0..2; fix"):
        _trainer().fit(data, val)


def test_a_label_error_names_the_row_of_the_whole_data_set():
    full = _data(40)
    train_rows, val_rows, test_rows = split_indices(40, 0.25, 0.25, seed=1)
    bad = int(val_rows[3])
    full.targets["size"][bad] = float("nan")
    splits = DataSplits(full.subset(train_rows), full.subset(val_rows), full.subset(test_rows), TASKS, (4,),
                        {"rows": {"train": train_rows.numpy(), "val": val_rows.numpy(), "test": test_rows.numpy()}})
    with pytest.raises(ValueError, match=rf"^val split, task 'size'.*label at row 3 is not a finite number "
                                         rf"\(row {bad} of the whole data set\)"):
        splits.validate()


def test_dict_inputs_are_checked_for_non_finite_values():
    data = _data()
    inputs = {"dense": data.inputs, "extra": torch.zeros(len(data), 2, 3), "ids": torch.arange(len(data))}
    inputs["extra"][6, 1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"^train split: input 'extra' feature 5 of row 6 is not finite"):
        MultiTaskDataset(inputs, data.targets).validate(TASKS, "train")


def test_a_task_without_labelled_training_rows_is_refused():
    data = _data()
    data.masks["size"][:] = False
    with pytest.raises(ValueError, match=r"task 'size' \(target 'size'\) has no labelled rows in the train split"):
        _trainer().fit(data)


def test_a_task_without_labelled_validation_rows_is_a_warning_and_reported(caplog):
    data, val = _data(), _data(16)
    val.masks["size"][:] = False
    trainer = _trainer()
    with caplog.at_level(logging.WARNING, logger="taskloom.data.dataset"):
        trainer.fit(data, val)
    assert "task 'size' (target 'size') has no labelled rows in the validation split" in caplog.text
    assert trainer.evaluate(val)["size"] == {"labelled": 0, "note": "no labelled rows in this split"}
    assert trainer.history.records[-1]["val"]["size"] == {}


def test_an_empty_split_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "t.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(6)))
    config = parse_config({"data": {"dataset": "table", "options": {"path": str(tmp_path / "t.csv")},
                                    "val_fraction": 0.05},
                           "tasks": [{"name": "odd", "kind": "binary", "target": "y"}]})
    with pytest.raises(ValueError, match=r"t\.csv' has 6 data rows; .*\(val_fraction 0\.05, test_fraction 0\.2\) "
                                         r"needs at least 11: add rows"):  # round(11 * 0.05) = 1 validation row
        load_data(config)
