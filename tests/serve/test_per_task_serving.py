"""A sequential run's per-task models (curriculum keep: per_task) through the run directory: load, predict, export."""
from __future__ import annotations

import json

import pytest
import torch

import taskloom
from taskloom.config import parse_config
from taskloom.sharing.per_task import PerTaskModels
from taskloom.train.artifact import write_model_artifact
from taskloom.train.runner import build_trainer, load_data, run_training


def _config(tmp_path, keep="per_task", epochs=2):
    return parse_config({
        "name": "seq",
        "data": {"dataset": "synthetic", "options": {"n": 240, "d": 5, "num_tasks": 2}},
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
        "train": {"epochs": epochs, "batch_size": 32, "seed": 0},
        "curriculum": {"mode": "sequential", "order": ["y2", "y1"], "strength": 0.1, "keep": keep},
        "output_dir": str(tmp_path / "runs"),
    })


def test_load_rebuilds_the_per_task_model_and_predicts_as_the_trained_one(tmp_path):
    config = _config(tmp_path)
    splits = load_data(config)
    run_dir = tmp_path / "model"
    run_dir.mkdir()
    write_model_artifact(run_dir, config, splits.tasks, splits)
    trainer = build_trainer(config, splits.tasks, splits, run_dir)
    assert isinstance(trainer.model, PerTaskModels)
    trainer.fit(splits.train, splits.val)
    spec = json.loads((run_dir / "model.json").read_text())
    assert spec["architecture"]["per_task_models"] is True
    predictor = taskloom.load(run_dir, checkpoint="last")
    assert isinstance(predictor.model, PerTaskModels)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(splits.test.inputs)
    got = predictor.logits(splits.test.inputs)
    for name in ("y1", "y2"):
        assert torch.allclose(got[name].reshape(expected[name].shape), expected[name], atol=1e-6)
    # the two tasks are answered by different copies of the trunk
    first, second = (list(predictor.model.members[n].trunk.parameters())[0] for n in ("y1", "y2"))
    assert not torch.equal(first, second)


def test_a_shared_run_keeps_one_model_and_compare_trains_plain_baselines(tmp_path):
    result = run_training(_config(tmp_path, keep="shared", epochs=1))
    run_dir = next((tmp_path / "runs").iterdir())
    predictor = taskloom.load(run_dir)
    assert not isinstance(predictor.model, PerTaskModels)
    assert result["cells"]
    per_task = parse_config({**_config(tmp_path, epochs=1).model_dump(mode="json"),
                             "output_dir": str(tmp_path / "compare"),
                             "train": {"epochs": 1, "batch_size": 32, "seed": 0, "baselines": True}})
    run_training(per_task)
    compare_dir = next((tmp_path / "compare").iterdir())
    specs = {str(p): json.loads(p.read_text()) for p in compare_dir.rglob("model.json")}
    flags = sorted((spec["architecture"].get("per_task_models", False), len(spec["tasks"])) for spec in specs.values())
    assert flags == [(False, 1), (False, 1), (True, 2)]  # single-task baselines stay plain models


def test_onnx_export_of_the_per_task_model_agrees_with_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from taskloom.serve.export import export_onnx, onnx_session

    run_training(_config(tmp_path, epochs=1))
    predictor = taskloom.load(next((tmp_path / "runs").iterdir()))
    path = export_onnx(predictor, tmp_path / "seq.onnx")
    inputs = torch.randn(9, *predictor.input_shape, generator=torch.Generator().manual_seed(3))
    got = dict(zip(predictor.output_names, onnx_session(path).run(None, {"inputs": inputs.numpy()})))
    expected = predictor.outputs(inputs)
    for name, value in expected.items():
        assert abs(got[name] - value).max() < 1e-4
