"""Tables say what they did: the feature report, refused identifiers and dates, hints, transforms, imbalance notes."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from taskloom.data.datasets.table import load_table
from taskloom.task import TargetTransform, Task


def make_frame(n: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "x": rng.normal(size=n),
        "colour": rng.choice(["red", "green"], n),
        "grade": rng.integers(1, 5, n),  # whole numbers 1..4: codes, maybe
        "same": np.full(n, 7.0),
        "y": rng.integers(0, 2, n),
    })


def _report(splits) -> dict[str, tuple[str, str]]:
    return {row["column"]: (row["type"], row["reason"]) for row in splits.info["feature_report"]}


def test_the_report_types_every_column_and_says_why(caplog):
    frame = make_frame()
    with caplog.at_level(logging.INFO, logger="taskloom.data.report"):
        splits = load_table([Task("y", "binary")], frame=frame)
    report = _report(splits)
    assert report["x"][0] == "numeric"
    assert report["colour"][0] == "categorical"
    assert report["same"] == ("dropped", "constant: every row holds 7.0")
    assert report["y"] == ("dropped", "target of task 'y'")
    assert report["grade"][0] == "numeric" and "4 distinct values" in report["grade"][1]
    assert "categorical" in report["grade"][1]  # the hint: list it as categorical if these are codes
    assert splits.info["numeric_features"] == ["x", "grade"] and splits.info["categorical_features"] == ["colour"]
    assert splits.input_shape == (2 + 2,)  # x, grade, and colour one-hot
    assert json.loads(json.dumps(splits.info["feature_report"])) == splits.info["feature_report"]
    text = caplog.text
    assert "numeric (2): x, grade" in text and "categorical (1): colour" in text
    assert "'same' dropped: constant" in text and "'grade' is numeric" in text


def test_an_identifier_column_is_refused_unless_listed():
    frame = make_frame()
    frame["customer"] = [f"c{i:04d}" for i in range(len(frame))]
    with pytest.raises(ValueError, match=r"column 'customer'.*unique on every row.*list it in features.*exclude"):
        load_table([Task("y", "binary")], frame=frame)
    frame = frame.drop(columns="customer").assign(row_id=np.arange(100, 100 + len(frame)))
    with pytest.raises(ValueError, match=r"column 'row_id'.*unique on every row"):
        load_table([Task("y", "binary")], frame=frame)
    left_out = load_table([Task("y", "binary")], frame=frame, exclude=["row_id"])
    assert _report(left_out)["row_id"] == ("dropped", "listed in exclude")
    kept = load_table([Task("y", "binary")], frame=frame, features=["x", "row_id"])
    assert _report(kept)["row_id"][0] == "numeric" and "identifier" in _report(kept)["row_id"][1]


def test_a_date_column_is_refused_unless_listed():
    frame = make_frame()
    frame["day"] = [f"2024-01-{1 + i % 28:02d}" for i in range(len(frame))]
    with pytest.raises(ValueError, match=r"column 'day'.*looks like a date.*exclude=\['day'\]"):
        load_table([Task("y", "binary")], frame=frame)
    kept = load_table([Task("y", "binary")], frame=frame, features=["x", "day"])
    assert _report(kept)["day"][0] == "categorical" and "date" in _report(kept)["day"][1]


def test_a_numeric_column_with_stray_text_names_column_rows_and_values(tmp_path):
    frame = make_frame()
    frame["x"] = frame["x"].round(3).astype(object)
    frame.loc[5, "x"] = "hello"
    path = tmp_path / "stray.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"feature column 'x' .*stray\.csv.* numeric except for 1 cell: "
                                         r"row 5 \(line 7 of .*stray\.csv\): 'hello'.*coerce_numeric"):
        load_table([Task("y", "binary")], path=path)
    with pytest.raises(ValueError, match=r"column 'x': row 5 .* is empty.*impute='mean'"):
        load_table([Task("y", "binary")], path=path, coerce_numeric=["x"])
    splits = load_table([Task("y", "binary")], path=path, coerce_numeric=["x"], impute="mean")
    assert _report(splits)["x"][0] == "numeric" and "1 cell(s)" in _report(splits)["x"][1]
    assert splits.input_shape == (4,)  # x stays one numeric column, not hundreds of one-hot ones


def test_a_mostly_text_column_stays_categorical():
    frame = make_frame()
    frame["code"] = np.where(np.arange(len(frame)) % 2 == 0, "A", "17")  # half the cells are numbers: < 90 %
    splits = load_table([Task("y", "binary")], frame=frame)
    assert _report(splits)["code"] == ("categorical", "text")


def test_threshold_and_bins_transforms_make_labels_from_a_numeric_column():
    frame = make_frame()
    frame["flares"] = [0, 1, 3, np.nan] * 20
    frame["size"] = [-2.0, 0.0, 4.9, 5.0] * 20
    tasks = [Task("any_flare", "binary", target="flares", transform=TargetTransform(threshold=0)),
             Task("size_class", "multiclass", 3, target="size", transform=TargetTransform(bins=(0.0, 5.0)))]
    splits = load_table(tasks, frame=frame, features=["x", "colour"])
    rows = np.concatenate([splits.info["rows"][name] for name in ("train", "val", "test")])
    flare = torch.cat([getattr(splits, n).targets["any_flare"] for n in ("train", "val", "test")]).numpy()
    mask = torch.cat([getattr(splits, n).masks["any_flare"] for n in ("train", "val", "test")]).numpy()
    size = torch.cat([getattr(splits, n).targets["size_class"] for n in ("train", "val", "test")]).numpy()
    expected_flare = {0: 0.0, 1: 1.0, 2: 1.0}  # row % 4: 0 flares -> 0, 1 and 3 flares -> 1, row 3 missing
    expected_size = {0: 0, 1: 1, 2: 1, 3: 2}  # -2 < 0; 0 and 4.9 in [0, 5); 5 from 5 on
    for row, value, labelled, cls in zip(rows, flare, mask, size):
        assert labelled == (row % 4 != 3)
        if labelled:
            assert value == expected_flare[row % 4]
        assert cls == expected_size[row % 4]
    assert splits.info["transforms"]["any_flare"]["threshold"] == 0


def test_transforms_refuse_what_does_not_fit():
    with pytest.raises(ValueError, match=r"task 'a': transform.threshold .*set kind: binary"):
        Task("a", "regression", transform=TargetTransform(threshold=0))
    with pytest.raises(ValueError, match=r"task 'a': transform.bins \[0.0, 1.0\] make 3 classes; set num_outputs: 3"):
        Task("a", "multiclass", 2, transform=TargetTransform(bins=(0.0, 1.0)))
    frame = make_frame().assign(flares=["none"] + [1] * 79)
    with pytest.raises(ValueError, match=r"task 'f' \(column 'flares'\): transform needs numbers.*row 0.*'none'"):
        load_table([Task("f", "binary", target="flares", transform=TargetTransform(threshold=0))], frame=frame)


def test_a_rare_positive_class_gets_a_class_weights_note(caplog):
    frame = make_frame(n=400)
    frame["rare"] = 0
    frame.loc[::50, "rare"] = 1  # 8 positives of 400: 2 %
    with caplog.at_level(logging.INFO, logger="taskloom.data.report"):
        splits = load_table([Task("rare", "binary"), Task("y", "binary")], frame=frame)
    notes = splits.info["notes"]
    assert len(notes) == 1 and "task 'rare'" in notes[0] and "class_weights" in notes[0]
    train_positives = int(splits.train.targets["rare"].sum())
    assert f"({train_positives} of {len(splits.train)})" in notes[0]
    assert "class_weights" in caplog.text
    weighted = load_table([Task("rare", "binary", class_weights=[1, 49])], frame=frame)
    assert weighted.info["notes"] == []  # already weighted: no note
