"""Built-in auxiliaries: a withheld feature column, input reconstruction, seeded input masking."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from taskloom import MultiTaskDataset, Task
from taskloom.config import ConfigError, parse_config
from taskloom.data.auxiliaries import add_reconstruction, input_mask, standardize, standardize_feature_target
from taskloom.data.dataset import DataSplits
from taskloom.train.runner import load_data


def _splits():
    train = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])
    val = torch.tensor([[3.0, 12.0]])
    y = {"y": torch.zeros(3)}
    make = lambda x, t: MultiTaskDataset(x, t, {})  # noqa: E731
    return DataSplits(make(train, y), make(val, {"y": torch.zeros(1)}), make(val.clone(), {"y": torch.zeros(1)}),
                      [Task("y", "regression")], (2,))


def test_reconstruct_target_is_the_inputs_standardized_by_training_statistics():
    splits = _splits()
    task = add_reconstruction(splits)
    s = math.sqrt(8 / 3)  # std of 1, 3, 5 (population); the constant column keeps scale 1
    expected = torch.tensor([[-2 / s, 0.0], [0.0, 0.0], [2 / s, 0.0]])
    assert torch.allclose(splits.train.targets["aux_reconstruct"], expected)
    assert torch.allclose(splits.val.targets["aux_reconstruct"], torch.tensor([[0.0, 2.0]]))
    assert task.role == "auxiliary" and task.num_outputs == 2 and splits.tasks[-1] is task
    assert torch.equal(splits.train.inputs, torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]]))  # no mask


def test_standardize_flattens_images():
    images = torch.arange(8.0).reshape(2, 1, 2, 2)
    assert torch.allclose(standardize(images, images), torch.tensor([[-1.0] * 4, [1.0] * 4]))


def test_mask_has_the_exact_count_per_row_and_repeats_with_its_seed():
    mask = input_mask((50, 8), 0.25, seed=3)
    assert mask.sum(dim=1).tolist() == [2] * 50
    assert torch.equal(mask, input_mask((50, 8), 0.25, seed=3))
    assert not torch.equal(mask, input_mask((50, 8), 0.25, seed=4))
    with pytest.raises(ValueError, match="mask"):
        input_mask((2, 8), 1.0, 0)


def test_masking_zeroes_exactly_the_masked_training_inputs_and_targets_stay_whole():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(40, 10, generator=generator) + 1.0  # no input is zero before masking
    data = lambda: MultiTaskDataset(x.clone(), {"y": torch.zeros(40)}, {})  # noqa: E731
    splits = DataSplits(data(), data(), data(), [Task("y", "regression")], (10,))
    add_reconstruction(splits, mask=0.3, seed=7)
    expected = input_mask((40, 10), 0.3, seed=7)
    assert torch.equal(splits.train.inputs == 0, expected)
    assert torch.equal(splits.train.inputs[~expected], x[~expected])
    assert torch.equal(splits.val.inputs, x)  # evaluation sees whole rows, as served rows are
    assert torch.allclose(splits.train.targets["aux_reconstruct"], standardize(x, x))


def _table(tmp_path, n=60):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.integers(20, 70, n).astype(float), "income": rng.normal(50, 10, n),
                          "city": rng.choice(["a", "b"], n)})
    frame["buy"] = np.where(frame.income + rng.normal(0, 5, n) > 50, "yes", "no")
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _config(path, auxiliaries, features=None, **extra):
    options = {"path": str(path)} | ({"features": features} if features else {})
    return parse_config({"data": {"dataset": "table", "options": options},
                         "tasks": [{"name": "buy", "kind": "binary", "target": "buy"}],
                         "auxiliaries": auxiliaries, **extra})


@pytest.mark.parametrize("features", [None, ["age", "income", "city"]])
def test_withheld_feature_is_absent_from_the_inputs_and_is_a_target(tmp_path, features):
    path, frame = _table(tmp_path)
    splits = load_data(_config(path, [{"kind": "feature", "column": "age"}], features))
    assert splits.info["numeric_features"] == ["income"]
    assert not any("age" in name for name in splits.info["feature_names"])
    assert "age" not in splits.info["preprocessing"]["numeric"]
    task = next(t for t in splits.tasks if t.name == "aux_feature_age")
    assert task.role == "auxiliary" and task.target == "age" and task.kind == "regression"
    assert splits.in_features == 3  # income + city one-hot (a, b)
    rows = splits.info["rows"]["train"]
    labels = splits.train.targets["aux_feature_age"].numpy()
    assert np.corrcoef(labels, frame.age.to_numpy()[rows])[0, 1] == pytest.approx(1.0)


def test_feature_target_is_standardized_by_its_labelled_training_rows():
    splits = _splits()
    splits.train.targets["f"] = torch.tensor([1.0, 3.0, 99.0])
    splits.train.masks["f"] = torch.tensor([True, True, False])
    splits.val.targets["f"], splits.val.masks["f"] = torch.tensor([4.0]), torch.tensor([True])
    splits.test.targets["f"], splits.test.masks["f"] = torch.tensor([0.0]), torch.tensor([True])
    standardize_feature_target(splits, "f")  # mean 2 and std 1 of the labelled 1, 3 (99 is unlabelled)
    assert torch.allclose(splits.train.targets["f"][:2], torch.tensor([-1.0, 1.0]))
    assert torch.allclose(splits.val.targets["f"], torch.tensor([2.0]))
    assert torch.allclose(splits.test.targets["f"], torch.tensor([-2.0]))
    assert splits.info["auxiliaries"]["f"]["standardized"] == {"mean": 2.0, "scale": 1.0}


def test_loaded_regression_feature_has_training_mean_zero_and_std_one(tmp_path):
    path, frame = _table(tmp_path)
    splits = load_data(_config(path, [{"kind": "feature", "column": "age"}]))
    raw = frame.age.to_numpy()[splits.info["rows"]["train"]]
    labels = splits.train.targets["aux_feature_age"].numpy()
    assert np.allclose(labels, (raw - raw.mean()) / raw.std(), atol=1e-5)


def test_table_reconstruct_and_feature_together(tmp_path):
    path, _ = _table(tmp_path)
    splits = load_data(_config(path, [{"kind": "feature", "column": "city", "task_kind": "binary"},
                                      {"kind": "reconstruct", "mask": 0.5, "seed": 1}]))
    assert [t.name for t in splits.tasks] == ["buy", "aux_feature_city", "aux_reconstruct"]
    assert splits.train.targets["aux_reconstruct"].shape == (len(splits.train), 2)  # age, income
    assert ((splits.train.inputs == 0).sum(dim=1) == 1).all()


def test_multimnist_supports_reconstruct_and_refuses_feature():
    config = parse_config({"data": {"dataset": "multimnist", "options": {"size": 120}},
                           "auxiliaries": [{"kind": "reconstruct"}]})
    splits = load_data(config)
    assert splits.train.targets["aux_reconstruct"].shape == (len(splits.train), 28 * 28)
    assert splits.tasks[-1].name == "aux_reconstruct"
    with pytest.raises(ConfigError, match=r"auxiliaries\[0\]\.kind: a feature auxiliary withholds a table column"):
        parse_config({"data": {"dataset": "multimnist"}, "auxiliaries": [{"kind": "feature", "column": "x"}]})


@pytest.mark.parametrize("auxiliary, message", [
    ({"kind": "feature"}, r"auxiliaries\[0\]\.column: a feature auxiliary needs column"),
    ({"kind": "reconstruct", "mask": 1.0}, r"auxiliaries\[0\]\.mask"),
    ({"kind": "feature", "column": "buy"}, r"auxiliaries\[0\]\.column: 'buy' is already the target of task"),
    ({"kind": "recon"}, r"auxiliaries\[0\]\.kind"),
])
def test_bad_auxiliaries_are_refused_with_their_path(tmp_path, auxiliary, message):
    path, _ = _table(tmp_path)
    with pytest.raises(ConfigError, match=message):
        _config(path, [auxiliary])


def test_a_missing_feature_column_is_named(tmp_path):
    path, _ = _table(tmp_path)
    with pytest.raises(ConfigError, match=r"auxiliaries\[0\]\.column: column 'height' is not in the table"):
        load_data(_config(path, [{"kind": "feature", "column": "height"}]))
