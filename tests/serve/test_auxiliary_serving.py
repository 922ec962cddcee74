"""Auxiliary tasks are trained but not served: load, predict, export and the CLI give the main tasks unless asked."""
import json
from pathlib import Path

import pandas as pd
import pytest

from taskloom.cli import main
from taskloom.config import parse_config
from taskloom.serve.encoding import InputError
from taskloom.serve.export import export_program
from taskloom.serve.predictor import load
from taskloom.train.runner import run_training

from serve._runs import shop_config, shop_frame


@pytest.fixture(scope="module")
def aux_run(tmp_path_factory):
    """A shop run whose regression task ``spend`` is auxiliary, weighted 0.5 with a cosine decay."""
    directory = tmp_path_factory.mktemp("aux")
    frame = shop_frame(200)
    frame.to_csv(directory / "shop.csv", index=False)
    raw = shop_config(directory / "shop.csv", directory / "runs", epochs=2)
    raw["tasks"][2].update(role="auxiliary", auxiliary={"weight": 0.5, "schedule": "cosine"})
    result = run_training(parse_config(raw))
    return Path(result["run_dir"]), frame


def test_model_json_records_each_tasks_role(aux_run):
    spec = json.loads(next(aux_run[0].glob("**/model.json")).read_text())
    assert {t["name"]: t["role"] for t in spec["tasks"]} == {"churn": "main", "segment": "main",
                                                              "spend": "auxiliary"}


def test_predictor_serves_main_tasks_unless_auxiliaries_are_asked_for(aux_run):
    run_dir, frame = aux_run
    predictor = load(run_dir)
    assert predictor.task_names == ["churn", "segment"]
    assert [t["name"] for t in predictor.metadata()["tasks"]] == ["churn", "segment"]
    out = predictor.predict(frame.head(5).drop(columns=["spend"]))
    assert "spend" not in out.columns and "churn" in out.columns
    with pytest.raises(InputError, match="include_auxiliary=True"):
        predictor.pick_tasks(["spend"])
    everything = load(run_dir, include_auxiliary=True)
    assert everything.task_names == ["churn", "segment", "spend"]
    both = everything.predict(frame.head(5).drop(columns=["spend"]))
    assert "spend" in both.columns
    pd.testing.assert_series_equal(both["churn_prob"], out["churn_prob"])  # the same forward pass


def test_old_run_without_roles_loads_with_every_task_main(aux_run, tmp_path):
    import shutil

    model_dir = next(aux_run[0].glob("**/model.json")).parent
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    spec = json.loads((old / "model.json").read_text())
    for task in spec["tasks"]:
        del task["role"]
    (old / "model.json").write_text(json.dumps(spec))
    assert load(old).task_names == ["churn", "segment", "spend"]


def test_exported_program_has_only_main_outputs_by_default(aux_run, tmp_path):
    main_only = export_program(load(aux_run[0]), tmp_path / "main.pt2")
    assert json.loads((tmp_path / "main.pt2.json").read_text())["outputs"] == [
        "churn", "churn_prob", "segment", "segment_prob"]
    export_program(load(aux_run[0], include_auxiliary=True), tmp_path / "all.pt2")
    assert json.loads((tmp_path / "all.pt2.json").read_text())["outputs"][-1] == "spend"
    assert main_only.is_file()


def test_cli_predict_include_auxiliary_flag(aux_run, tmp_path):
    run_dir = str(aux_run[0])
    assert main(["predict", run_dir, "--split", "test", "--out", str(tmp_path / "main.csv")]) == 0
    assert main(["predict", run_dir, "--split", "test", "--include-auxiliary", "--out", str(tmp_path / "all.csv")]) == 0
    assert "spend" not in pd.read_csv(tmp_path / "main.csv").columns
    assert "spend" in pd.read_csv(tmp_path / "all.csv").columns


def test_metrics_log_the_auxiliary_weight_each_epoch(aux_run):
    model_dir = next(aux_run[0].glob("**/model.json")).parent
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    weights = [r["auxiliary"]["spend"]["weight"] for r in records]
    assert weights[0] == pytest.approx(0.25, abs=1e-9)  # 0.5 * (1 + cos(pi/2)) / 2 after half the steps
    assert weights[1] == pytest.approx(0.0, abs=1e-12)


def test_http_service_answers_for_main_tasks_only(aux_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from taskloom.serve.app import create_app

    run_dir, frame = aux_run
    rows = frame.head(2).drop(columns=["spend", "churn", "segment", "customer"])
    records = json.loads(rows.to_json(orient="records"))
    with TestClient(create_app(load(run_dir))) as client:
        assert client.get("/health").json()["tasks"] == ["churn", "segment"]
        answer = client.post("/predict", json={"rows": records}).json()
        assert answer["tasks"] == ["churn", "segment"]
        assert not any(key.startswith("spend") for key in answer["predictions"][0])
    with TestClient(create_app(load(run_dir, include_auxiliary=True))) as client:
        assert "spend" in client.post("/predict", json={"rows": records}).json()["predictions"][0]


def test_onnx_graph_has_only_main_outputs_by_default(aux_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from taskloom.serve.export import export_onnx, onnx_session

    path = export_onnx(load(aux_run[0]), tmp_path / "main.onnx")
    assert [o.name for o in onnx_session(path).get_outputs()] == ["churn", "churn_prob", "segment", "segment_prob"]
