"""One inference path: taskloom.load, `taskloom predict` and the server give Trainer.predict's outputs."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import taskloom
from taskloom.cli import main
from taskloom.config import parse_config
from taskloom.serve.inference import InferenceModule
from taskloom.serve.stream import predict_file
from taskloom.task import Task
from taskloom.train.runner import build_trainer, load_data, run_training

PREDICTED = ["churn", "churn_prob", "segment", "segment_prob_high", "segment_prob_low", "segment_prob_mid", "spend"]


def _trainer(config, run_dir):
    splits = load_data(config)
    trainer = build_trainer(config, splits.tasks, splits, None)
    trainer.load(run_dir / "hard+equal" / "seed0" / "checkpoints" / "best.pt", restore_training=False)
    return trainer, splits


def _held_out(run_dir, frame, splits, tmp_path):
    rows = frame.iloc[splits.info["rows"]["test"]].reset_index(drop=True)
    path = tmp_path / "held_out.csv"
    rows.to_csv(path, index=False)
    return rows, path


def test_cli_predict_on_held_out_rows_equals_trainer_predict(plain_run, tmp_path):
    run_dir, frame, config = plain_run
    trainer, splits = _trainer(config, run_dir)
    rows, path = _held_out(run_dir, frame, splits, tmp_path)
    assert main(["predict", str(run_dir), str(path), "--out", str(tmp_path / "out.csv")]) == 0
    out = pd.read_csv(tmp_path / "out.csv")
    expected = trainer.predict(splits.test.inputs)
    assert out.customer.tolist() == rows.customer.tolist()  # the id column passes through
    assert out.churn_input.tolist() == rows.churn.tolist()  # a target column is kept, renamed
    np.testing.assert_array_equal(out.churn.to_numpy(), expected["churn"].numpy())
    classes = ["high", "low", "mid"]
    assert out.segment.tolist() == [classes[i] for i in expected["segment"].tolist()]
    np.testing.assert_allclose(out.spend.to_numpy(), expected["spend"].numpy(), rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        logits = trainer.model.eval()(splits.test.inputs)
    np.testing.assert_allclose(out.churn_prob, torch.sigmoid(logits["churn"]).reshape(-1).numpy(), atol=1e-7)
    probabilities = torch.softmax(logits["segment"], -1).numpy()
    for j, name in enumerate(classes):
        np.testing.assert_allclose(out[f"segment_prob_{name}"], probabilities[:, j], atol=1e-7)


def test_python_cli_and_server_give_identical_outputs(plain_run, tmp_path):
    from fastapi.testclient import TestClient

    from taskloom.serve.app import create_app

    run_dir, frame, _ = plain_run
    rows = frame.head(40)
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    assert main(["predict", str(run_dir), str(path), "--out", str(tmp_path / "cli.csv")]) == 0
    cli = pd.read_csv(tmp_path / "cli.csv")
    predictor = taskloom.load(run_dir)
    python = predictor.predict(pd.read_csv(path))
    records = json.loads(pd.read_csv(path).to_json(orient="records"))
    with TestClient(create_app(predictor)) as client:
        answer = client.post("/predict", json={"rows": records})
    assert answer.status_code == 200
    server = pd.DataFrame(answer.json()["predictions"])
    for column in PREDICTED:
        assert cli[column].tolist() == python[column].tolist() == server[column].tolist(), column


def test_tasks_option_writes_only_those_tasks(plain_run, tmp_path):
    run_dir, frame, _ = plain_run
    path = tmp_path / "rows.csv"
    frame.head(5)[["customer", "age", "income", "channel"]].to_csv(path, index=False)
    assert main(["predict", str(run_dir), str(path), "--tasks", "spend", "--out", str(tmp_path / "o.csv")]) == 0
    assert list(pd.read_csv(tmp_path / "o.csv").columns) == ["customer", "spend"]


def test_large_inputs_are_read_and_predicted_in_bounded_chunks(plain_run, tmp_path, monkeypatch):
    run_dir, frame, _ = plain_run
    big = pd.concat([frame] * 3, ignore_index=True)  # 1,080 rows
    path = tmp_path / "big.csv"
    big.to_csv(path, index=False)
    predictor = taskloom.load(run_dir)
    seen = []
    original = predictor.predict

    def recording(data, *args, **kwargs):
        seen.append(len(data))
        return original(data, *args, **kwargs)

    monkeypatch.setattr(predictor, "predict", recording)
    assert predict_file(predictor, path, tmp_path / "chunked.csv", chunk_rows=100) == len(big)
    assert max(seen) == 100 and sum(seen) == len(big)
    whole = original(big)
    chunked = pd.read_csv(tmp_path / "chunked.csv")
    assert chunked.churn.tolist() == whole.churn.tolist()
    np.testing.assert_array_equal(chunked.spend.to_numpy(), whole.spend.to_numpy())


def test_parquet_in_and_out_match_csv(plain_run, tmp_path):
    run_dir, frame, _ = plain_run
    frame.head(30).to_parquet(tmp_path / "rows.parquet")
    frame.head(30).to_csv(tmp_path / "rows.csv", index=False)
    assert main(["predict", str(run_dir), str(tmp_path / "rows.parquet"), "--out", str(tmp_path / "p.parquet")]) == 0
    assert main(["predict", str(run_dir), str(tmp_path / "rows.csv"), "--out", str(tmp_path / "c.csv")]) == 0
    parquet, csv = pd.read_parquet(tmp_path / "p.parquet"), pd.read_csv(tmp_path / "c.csv")
    for column in PREDICTED:
        assert parquet[column].tolist() == csv[column].tolist()


def test_split_predictions_equal_those_of_the_raw_rows(plain_run, tmp_path):
    run_dir, frame, config = plain_run
    splits = load_data(config)
    assert main(["predict", str(run_dir), "--split", "test", "--out", str(tmp_path / "split.csv")]) == 0
    split = pd.read_csv(tmp_path / "split.csv")
    assert split.row.tolist() == [int(r) for r in splits.info["rows"]["test"]]
    raw = taskloom.load(run_dir).predict(frame.iloc[split.row].reset_index(drop=True))
    assert split.segment.tolist() == raw.segment.tolist()
    assert split.churn.tolist() == raw.churn.tolist()
    for column in ("churn_prob", "segment_prob_high", "segment_prob_low", "segment_prob_mid", "spend"):
        np.testing.assert_allclose(split[column].to_numpy(), raw[column].to_numpy(), rtol=1e-6, atol=1e-6)


def test_load_accepts_run_model_and_compare_cell_directories(plain_run, tmp_path):
    run_dir, _, _ = plain_run
    model = run_dir / "hard+equal" / "seed0"  # the one multi-task model of `train`: architecture+method/seed
    assert taskloom.load(run_dir).model_dir == model
    assert taskloom.load(model).model_dir == model
    with pytest.raises(FileNotFoundError, match="has no model.json"):
        taskloom.load(tmp_path)


def test_checkpoints_by_name_and_a_missing_one_lists_what_exists(plain_run):
    run_dir, _, _ = plain_run
    assert taskloom.load(run_dir, checkpoint="best-spend").checkpoint == "best-spend"
    assert taskloom.load(run_dir, checkpoint="last").checkpoint == "last"
    with pytest.raises(FileNotFoundError, match=r"'best-nothing' does not exist .* it holds: \['best', "):
        taskloom.load(run_dir, checkpoint="best-nothing")
    with pytest.raises(ValueError, match="not best, last or best-TASK"):
        taskloom.load(run_dir, checkpoint="../best")


def test_compare_cells_and_single_task_models_load(tmp_path):
    from serve._runs import shop_config, shop_frame
    from taskloom.train.grid import GridSpec, run_grid

    shop_frame(120).to_csv(tmp_path / "shop.csv", index=False)
    config = parse_config({**shop_config(tmp_path / "shop.csv", tmp_path / "runs", epochs=1), "name": "grid"})
    result = run_grid(config, GridSpec(methods=["equal"], architectures=["mmoe"], seeds=[0, 1]))
    run_dir = tmp_path / "runs" / result["run_dir"].split("/")[-1]
    cell = taskloom.load(run_dir / "mmoe+equal" / "seed0")
    assert cell.spec["architecture"]["name"] == "mmoe" and cell.task_names == ["churn", "segment", "spend"]
    single = taskloom.load(run_dir / "single" / "spend" / "seed0")
    assert single.spec["architecture"]["name"] == "hard" and single.task_names == ["spend"]
    with pytest.raises(FileNotFoundError, match="several models"):  # two seeds: two multi-task models
        taskloom.load(run_dir)


def test_multilabel_outputs_one_column_per_label(tmp_path):
    config = parse_config({"name": "yeast", "data": {"dataset": "yeast", "options": {"multilabel": True}},
                           "model": {"trunk": {"name": "mlp", "options": {"hidden": [16]}}},
                           "train": {"epochs": 1, "batch_size": 256}, "output_dir": str(tmp_path)})
    run_dir = run_training(config)["run_dir"]
    predictor = taskloom.load(run_dir)
    splits = load_data(config)
    trainer = build_trainer(config, splits.tasks, splits, None)
    trainer.load(predictor.model_dir / "checkpoints" / "best.pt", restore_training=False)
    out = predictor.predict(splits.test.inputs)
    expected = trainer.predict(splits.test.inputs)["labels"].numpy()
    labels = splits.tasks[0].label_names
    assert list(out.columns[:len(labels)]) == [f"labels_{name}" for name in labels]
    np.testing.assert_array_equal(out[[f"labels_{name}" for name in labels]].to_numpy(), expected)


def test_standardized_regression_targets_come_back_in_original_units():
    torch.manual_seed(0)
    tasks = [Task("price", "regression")]
    model = taskloom.MultiTaskModel(nn.Linear(3, 4), tasks=tasks, out_features=4).eval()
    module = InferenceModule(model, tasks, target_scaling={"price": (100.0, 20.0)})
    x = torch.randn(5, 3)
    with torch.no_grad():
        standardized = model(x)["price"].squeeze(-1)
        (value,) = module(x)
    torch.testing.assert_close(value, standardized * 20.0 + 100.0)
