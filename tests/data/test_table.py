"""The table loader: missing labels as masks, train-only statistics, and errors that name the culprit."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from taskloom.data.datasets import load_dataset
from taskloom.data.datasets.table import load_table
from taskloom.task import Condition, Task


def make_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "x": rng.normal(5.0, 2.0, n),
        "z": rng.normal(-1.0, 0.5, n),
        "color": rng.choice(["red", "green", "blue"], n),
        "price": rng.normal(size=n),
        "kind": rng.choice(["cat", "dog", "eel"], n),
        "click": rng.integers(0, 2, n),
        "buy": rng.integers(0, 2, n),
        "w": rng.uniform(0.5, 2.0, n),
    })


def tasks() -> list[Task]:
    return [Task("price", "regression"), Task("kind", "multiclass", 3), Task("click", "binary")]


def test_csv_missing_target_cells_become_masks(tmp_path):
    frame = make_frame()
    frame["price"] = frame["price"].astype(object)
    frame.loc[[3, 10, 20], "price"] = None
    frame.loc[[5], "kind"] = ""
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    splits = load_dataset("table", tasks=tasks(), path=str(path))
    assert splits.input_shape == (4 + 3,)  # numeric x, z, buy, w; one-hot color
    unlabelled = {"price": set(), "kind": set(), "click": set()}
    for name in ("train", "val", "test"):
        split, rows = getattr(splits, name), splits.info["rows"][name]
        for task in unlabelled:
            unlabelled[task] |= {int(rows[i]) for i in torch.nonzero(~split.masks[task]).flatten()}
    assert unlabelled == {"price": {3, 10, 20}, "kind": {5}, "click": set()}
    assert splits.info["class_names"]["kind"] == ["cat", "dog", "eel"]


def test_default_features_exclude_targets_and_weights():
    frame = make_frame()
    task_list = tasks() + [Task("buy", "binary", sample_weight="w")]
    splits = load_table(task_list, frame=frame)
    assert splits.info["numeric_features"] == ["x", "z"]
    assert splits.info["categorical_features"] == ["color"]
    assert splits.input_shape == (5,)
    assert torch.allclose(splits.train.weights["buy"], torch.tensor(frame["w"].to_numpy(), dtype=torch.float32)[
        _rows(splits, "train", frame)])


def _rows(splits, name, frame):
    """The frame rows of a split."""
    return torch.as_tensor(splits.info["rows"][name])


def test_standardization_is_fit_on_the_training_split_only():
    frame = make_frame(n=200)
    splits = load_table(tasks(), frame=frame, seed=3)
    train_x = splits.train.inputs[:, 0]
    assert abs(float(train_x.mean())) < 1e-5 and abs(float(train_x.std(unbiased=False)) - 1) < 1e-4
    rows = _rows(splits, "train", frame)
    raw = frame["x"].to_numpy()[rows.numpy()]
    mean, scale = splits.info["standardization"]["x"]
    assert math.isclose(mean, raw.mean(), rel_tol=1e-9) and math.isclose(scale, raw.std(), rel_tol=1e-9)
    assert not math.isclose(mean, frame["x"].mean(), rel_tol=1e-6)
    # an outlier in the test split does not move the training statistics
    test_rows = _rows(splits, "test", frame)
    moved = frame.copy()
    moved.loc[int(test_rows[0]), "x"] = 1e6
    again = load_table(tasks(), frame=moved, seed=3)
    assert again.info["standardization"]["x"] == splits.info["standardization"]["x"]


def test_categorical_one_hot_fit_on_train_with_a_missing_category():
    frame = make_frame(n=100)
    frame["color"] = frame["color"].astype(object)
    frame.loc[::7, "color"] = None
    splits = load_table(tasks(), frame=frame)
    names = splits.info["feature_names"]
    assert names == ["x", "z", "buy", "w", "color=<missing>", "color=blue", "color=green", "color=red"]
    onehot = splits.train.inputs[:, 4:]
    assert torch.equal(onehot.sum(1), torch.ones(len(onehot)))
    missing = frame["color"].isna().to_numpy()[splits.info["rows"]["train"]]
    assert torch.equal(onehot[:, 0].bool(), torch.as_tensor(missing))


def test_parquet_and_binary_strings(tmp_path):
    frame = make_frame()
    frame["click"] = np.where(frame["click"] == 1, "yes", "no")
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    splits = load_dataset("table", tasks=tasks(), path=str(path))
    assert splits.info["positive_class"]["click"] == "yes"
    expected = torch.tensor((frame["click"] == "yes").to_numpy(), dtype=torch.float32)
    assert torch.equal(splits.train.targets["click"], expected[_rows(splits, "train", frame)])


def test_only_where_restricts_masks():
    frame = make_frame(n=80)
    task_list = [Task("click", "binary"), Task("buy", "binary", only_where=Condition("click", 1))]
    splits = load_table(task_list, frame=frame)
    for split in (splits.train, splits.val, splits.test):
        assert torch.equal(split.masks["buy"], split.targets["click"] == 1)
        assert split.masks["click"].all()


def test_unknown_target_column_names_the_task_and_lists_columns():
    with pytest.raises(ValueError, match=r"task 'nope'.*'missing_col'.*available columns.*'price'"):
        load_table([Task("nope", "regression", target="missing_col")], frame=make_frame())


def test_label_out_of_range_names_task_and_row(tmp_path):
    frame = make_frame()
    frame["kind"] = np.arange(len(frame)) % 3
    frame.loc[17, "kind"] = 5
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"task 'kind'.*row 17 \(line 19 of .*t\.csv\).*0\.\.2"):
        load_table(tasks(), path=path)


def test_too_many_string_classes_is_refused():
    frame = make_frame()
    with pytest.raises(ValueError, match=r"task 'kind'.*3 distinct classes.*num_outputs 2"):
        load_table([Task("kind", "multiclass", 2)], frame=frame)


def test_non_finite_feature_names_column_and_row(tmp_path):
    frame = make_frame()
    frame.loc[42, "z"] = np.inf
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"column 'z'.*row 42 \(line 44"):
        load_table(tasks(), path=path)


def test_empty_numeric_feature_needs_impute():
    frame = make_frame()
    frame.loc[9, "x"] = np.nan
    with pytest.raises(ValueError, match=r"column 'x'.*row 9.*impute='mean'"):
        load_table(tasks(), frame=frame)
    splits = load_table(tasks(), frame=frame, impute="mean")
    for name in ("train", "val", "test"):
        rows = list(splits.info["rows"][name])
        if 9 in rows:  # the training mean, standardized, is 0
            assert abs(float(getattr(splits, name).inputs[rows.index(9), 0])) < 1e-6


def test_bad_binary_and_regression_labels_name_the_row():
    frame = make_frame()
    frame["click"] = frame["click"].astype(object)
    frame.loc[4, "click"] = "maybe"
    frame.loc[0, "click"] = "no"
    with pytest.raises(ValueError, match=r"task 'click'.*found \d+"):
        load_table([Task("click", "binary")], frame=frame)
    frame = make_frame()
    frame["price"] = frame["price"].astype(object)
    frame.loc[6, "price"] = "cheap"
    with pytest.raises(ValueError, match=r"task 'price'.*row 6.*'cheap'.*not a number"):
        load_table([Task("price", "regression")], frame=frame)


def test_needs_tasks_and_one_source():
    with pytest.raises(ValueError, match="no default tasks"):
        load_table(None, frame=make_frame())
    with pytest.raises(ValueError, match="exactly one of"):
        load_table(tasks())


def test_unknown_feature_column_lists_the_columns():
    with pytest.raises(ValueError, match=r"features \['height'\] are not in the table; available columns"):
        load_table(tasks(), frame=make_frame(), features=["x", "height"])


def test_sample_weight_must_be_non_negative():
    frame = make_frame()
    frame.loc[11, "w"] = -1.0
    with pytest.raises(ValueError, match=r"task 'buy'.*'w'.*row 11"):
        load_table([Task("buy", "binary", sample_weight="w")], frame=frame)


def test_a_sample_weight_may_be_missing_where_the_label_is():
    frame = make_frame()
    frame["buy"] = frame["buy"].astype(float)
    frame.loc[[4, 9], "buy"] = np.nan
    frame.loc[[4, 9], "w"] = np.nan
    splits = load_table([Task("buy", "binary", sample_weight="w")], frame=frame)
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        assert torch.isfinite(split.weights["buy"]).all()
        labelled = split.masks["buy"]
        expected = torch.tensor(frame["w"].to_numpy(), dtype=torch.float32)[_rows(splits, name, frame)]
        assert torch.equal(split.weights["buy"][labelled], expected[labelled])
    frame.loc[12, "w"] = np.nan  # row 12 has a label: its weight must be a number
    with pytest.raises(ValueError, match=r"task 'buy'.*'w'.*row 12"):
        load_table([Task("buy", "binary", sample_weight="w")], frame=frame)
