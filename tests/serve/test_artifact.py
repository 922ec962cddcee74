"""The model directory describes itself: model.json rebuilds the model without the training data."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

import taskloom
from taskloom.config import ConfigError, parse_config
from taskloom.data.table import FeatureEncoder
from taskloom.train.artifact import f1_threshold
from taskloom.train.checkpoint import load_checkpoint

from serve._runs import shop_config


def test_model_json_holds_trunk_tasks_classes_and_preprocessing(shop_run):
    run_dir, frame, _ = shop_run
    spec = json.loads((run_dir / "hard+equal" / "seed0" / "model.json").read_text())
    # 2 numeric columns + 3 channels seen in training + the <missing> category = 6 encoded features
    assert spec["trunk"] == {"name": "mlp", "arguments": {"in_features": 6, "hidden": [16, 8]}}
    assert spec["architecture"] == {"name": "hard", "options": {}}
    tasks = {t["name"]: t for t in spec["tasks"]}
    assert tasks["churn"]["positive_class"] == "yes"  # the larger of the two labels is 1
    assert tasks["churn"]["decision_threshold"] == "f1"
    assert tasks["segment"]["class_names"] == ["high", "low", "mid"]
    prep = spec["preprocessing"]
    assert prep["numeric"] == ["age", "income"] and prep["categorical"] == ["channel"]
    assert prep["categories"]["channel"] == ["<missing>", "phone", "store", "web"]
    assert set(spec["chosen_thresholds"]) == {p.stem for p in (run_dir / "hard+equal" / "seed0" / "checkpoints").glob("*.pt")}


def test_encoder_statistics_are_those_of_the_training_split(shop_run):
    run_dir, frame, _ = shop_run
    predictor = taskloom.load(run_dir)
    rows = pd.read_csv(run_dir.parent.parent / "shop.csv")
    from taskloom.train.runner import load_data

    splits = load_data(parse_config(predictor.spec["config"]))
    train = rows.iloc[splits.info["rows"]["train"]]
    assert predictor.encoder.encoder.means["income"] == pytest.approx(train.income.mean(), rel=1e-12)
    assert predictor.encoder.encoder.scales["age"] == pytest.approx(train.age.std(ddof=0), rel=1e-12)


def test_feature_encoder_round_trips_through_json():
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": ["x", "y", None]})
    fitted = FeatureEncoder(["a"], ["b"]).fit(frame)
    again = FeatureEncoder.from_dict(json.loads(json.dumps(fitted.to_dict())))
    new = pd.DataFrame({"a": [3.0, 0.0], "b": ["y", "unseen"]})
    expected = np.array([[(3.0 - 7 / 3) / np.std([1, 2, 4]), 0, 0, 1], [(0 - 7 / 3) / np.std([1, 2, 4]), 0, 0, 0]])
    np.testing.assert_allclose(again.transform(new, str), expected, rtol=1e-6)


def test_a_damaged_encoder_description_is_refused():
    with pytest.raises(ValueError, match=r"no statistics for columns \['a'\]"):
        FeatureEncoder.from_dict({"numeric": ["a"], "categorical": [], "means": {}, "scales": {}, "categories": {}})


def test_f1_threshold_maximizes_f1_on_a_hand_computed_example():
    probabilities = torch.tensor([0.1, 0.4, 0.35, 0.8], dtype=torch.float64)
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    threshold, score = f1_threshold(torch.logit(probabilities), labels)
    # cut in (0.1, 0.35): predict the last three positive, TP 2, FP 1, FN 0 -> F1 = 4/5; any other cut is lower
    assert 0.1 < threshold < 0.35
    assert score == pytest.approx(0.8)
    assert f1_score(labels, (probabilities > threshold).long()) == pytest.approx(0.8)


def test_f1_threshold_needs_a_positive_label():
    with pytest.raises(ValueError, match="positive"):
        f1_threshold(torch.zeros(3), torch.zeros(3))


def test_chosen_threshold_is_the_f1_best_cut_on_validation(shop_run):
    run_dir, frame, _ = shop_run
    predictor = taskloom.load(run_dir)
    from taskloom.train.runner import load_data

    val = load_data(parse_config(predictor.spec["config"])).val
    probabilities = torch.sigmoid(predictor.logits(val.inputs)["churn"].double().reshape(-1))
    labels = val.targets["churn"].numpy()
    cut = predictor.thresholds["churn"]
    best = f1_score(labels, (probabilities > cut).numpy())
    for other in np.linspace(0.01, 0.99, 99):  # no cut on a fine grid beats it
        assert f1_score(labels, (probabilities > other).numpy()) <= best + 1e-12
    predicted = predictor.predict(val.inputs)["churn"].to_numpy()
    np.testing.assert_array_equal(predicted, (probabilities > cut).long().numpy())


@pytest.mark.parametrize("task, threshold, message", [
    ({"name": "s", "kind": "regression", "target": "spend"}, 0.3, "only a binary task has a decision threshold"),
    ({"name": "c", "kind": "binary", "target": "churn"}, 1.5, "strictly between 0 and 1"),
    ({"name": "c", "kind": "binary", "target": "churn"}, "best", "decision_threshold"),
])
def test_bad_decision_thresholds_are_refused_with_the_field(tmp_path, task, threshold, message):
    config = shop_config(tmp_path / "shop.csv", tmp_path)
    config["data"] = {"dataset": "synthetic"}
    config["tasks"] = [{**task, "decision_threshold": threshold}]
    with pytest.raises(ConfigError, match=message) as error:
        parse_config(config)
    assert "tasks[0].decision_threshold" in str(error.value)


def test_checkpoints_still_load_weights_only(shop_run):
    run_dir, _, _ = shop_run
    state = load_checkpoint(run_dir / "hard+equal" / "seed0" / "checkpoints" / "best.pt")  # torch.load(weights_only=True)
    assert set(state["task_names"]) == {"churn", "segment", "spend"}
