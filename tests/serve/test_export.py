"""ONNX export: one graph, a named output per task, dynamic batch, onnxruntime equal to PyTorch (<= 1e-5)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import taskloom
from taskloom.cli import main
from taskloom.config import parse_config
from taskloom.serve.export import ExportError, export_onnx, onnx_session
from taskloom.train.runner import run_training

from serve._runs import train_shop

onnxruntime = pytest.importorskip("onnxruntime")

TABLE_ARCHITECTURES = {
    "hard": {},
    "mmoe": {"num_experts": 3},
    "ple": {"num_levels": 2, "shared_experts": 1, "task_experts": 1},
    "cross_stitch": {},
    "cascade": {"order": ["segment", "churn", "spend"], "embedding_dim": 4},
    "mtan": {},
    "dselect_k": {"num_experts": 4, "k": 2},
}


def _check_against_pytorch(predictor, path, rows):
    session = onnx_session(path)
    assert [o.name for o in session.get_outputs()] == predictor.output_names
    batch = session.get_inputs()[0].shape[0]
    assert isinstance(batch, str)  # a named, dynamic batch axis
    generator = torch.Generator().manual_seed(7)
    worst = 0.0
    for n in rows:  # other batch sizes than the one traced at export (2)
        inputs = torch.randn((n, *predictor.input_shape), generator=generator)
        got = dict(zip(predictor.output_names, session.run(None, {"inputs": inputs.numpy()})))
        expected = predictor.outputs(inputs)
        for name in predictor.output_names:
            assert got[name].shape == expected[name].shape
            if np.issubdtype(expected[name].dtype, np.integer):
                np.testing.assert_array_equal(got[name], expected[name])
            else:
                worst = max(worst, float(np.max(np.abs(got[name] - expected[name]))))
    assert worst <= 1e-5
    return worst


@pytest.mark.parametrize("architecture", list(TABLE_ARCHITECTURES))
def test_table_architectures_export_to_onnx_equal_to_pytorch(architecture, tmp_path):
    run_dir, _, _ = train_shop(tmp_path, architecture, TABLE_ARCHITECTURES[architecture], epochs=1)
    predictor = taskloom.load(run_dir)
    path = export_onnx(predictor, tmp_path / "model.onnx")
    _check_against_pytorch(predictor, path, rows=(1, 37))
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["preprocessing"] == predictor.spec["preprocessing"]  # the encoding is recorded beside the graph
    assert meta["outputs"] == ["churn", "churn_prob", "segment", "segment_prob", "spend"]


def test_lenet_on_multimnist_exports_to_onnx_equal_to_pytorch(tmp_path):
    config = parse_config({"name": "mm", "data": {"dataset": "multimnist", "options": {"size": 300}},
                           "model": {"trunk": {"name": "lenet"}}, "train": {"epochs": 1, "batch_size": 64},
                           "output_dir": str(tmp_path)})
    predictor = taskloom.load(run_training(config)["run_dir"])
    assert predictor.input_shape == (1, 28, 28)
    path = export_onnx(predictor, tmp_path / "lenet.onnx")
    _check_against_pytorch(predictor, path, rows=(1, 9))
    assert main(["predict", str(predictor.model_dir), "--split", "test", "--out", str(tmp_path / "test.csv")]) == 0
    predicted = pd.read_csv(tmp_path / "test.csv")
    assert list(predicted.columns) == ["row", "left", *[f"left_prob_{d}" for d in range(10)],
                                       "right", *[f"right_prob_{d}" for d in range(10)]]
    probabilities = predicted[[f"left_prob_{d}" for d in range(10)]].to_numpy()
    np.testing.assert_array_equal(predicted.left.to_numpy(), probabilities.argmax(1))


def test_export_command_writes_the_graph_and_checks_it(tmp_path, capsys):
    run_dir, _, _ = train_shop(tmp_path, epochs=1)
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "shop.onnx")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "shop.onnx").is_file() and (tmp_path / "shop.onnx.json").is_file()
    assert "max abs difference" in out


CONLLU = """# sent_id = {i}
# text = {text}
1\t{a}\t{a}\tNOUN\t_\tNumber=Sing\t2\tnsubj\t_\t_
2\t{b}\t{b}\tVERB\t_\tMood=Ind\t0\troot\t_\t_

"""


def test_a_bilstm_tagger_is_refused_with_the_reason(tmp_path, capsys):
    pytest.importorskip("conllu")
    words = ["oleo", "gas", "poco", "flui", "corre", "sobe"]
    for split, count in (("train", 12), ("dev", 4), ("test", 4)):
        text = "".join(CONLLU.format(i=i, text="x", a=words[i % 3], b=words[3 + i % 3]) for i in range(count))
        (tmp_path / f"tiny-{split}.conllu").write_text(text)
    config = parse_config({"name": "tags", "data": {"dataset": "petrogold", "options": {"root": str(tmp_path)}},
                           "model": {"trunk": {"name": "bilstm", "options": {"embedding_dim": 4, "hidden_size": 4,
                                                                             "num_layers": 1}}},
                           "train": {"epochs": 1, "batch_size": 4}, "output_dir": str(tmp_path / "runs")})
    run_dir = run_training(config)["run_dir"]
    with pytest.raises(ExportError, match="pack_padded_sequence"):
        export_onnx(taskloom.load(run_dir), tmp_path / "tags.onnx")
    assert main(["export", run_dir]) == 2
    assert "cannot be exported to ONNX" in capsys.readouterr().out


@pytest.mark.parametrize("architecture", ["hard", "cascade"])
def test_torch_export_program_runs_without_taskloom_and_equals_eager(architecture, tmp_path):
    run_dir, _, _ = train_shop(tmp_path, architecture, TABLE_ARCHITECTURES[architecture], epochs=1)
    assert main(["export", str(run_dir), "--format", "torch-export", "--out", str(tmp_path / "shop.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "shop.pt2")).module()
    predictor = taskloom.load(run_dir)
    for n in (1, 23):
        inputs = torch.randn((n, *predictor.input_shape), generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            got = [t.numpy() for t in program(inputs)]
        expected = predictor.outputs(inputs)
        for name, value in zip(predictor.output_names, got):
            np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-6)
