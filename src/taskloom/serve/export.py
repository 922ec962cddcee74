"""Export a trained model to ONNX (or a ``torch.export`` program): one graph, one named output per task
(plus probabilities), dynamic batch.

The graph is :class:`~taskloom.serve.inference.InferenceModule` over the model, so it gives what
``Predictor.outputs`` gives; its input is the encoded matrix, and the preprocessing that makes it from
raw rows is written beside the graph as JSON (``<out>.json``). ONNX needs ``pip install "taskloom[serve]"``.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskloom.serve.predictor import Predictor
from taskloom.train.timing import write_json_atomically

log = logging.getLogger(__name__)

INPUT_NAME = "inputs"
OPSET = 17
VERIFY_TOLERANCE = 1e-4


class ExportError(ValueError):
    """This model cannot be written in the requested format; the message says why."""


def check_exportable(predictor: Predictor) -> None:
    """Refuse models the ONNX exporter cannot trace with a dynamic batch, saying why."""
    kinds = {t.kind for t in predictor.tasks}
    if predictor.spec["input"].get("kind") == "mapping" or "tagging" in kinds:
        raise ExportError(
            f"{predictor.spec['trunk']['name']} with token tagging cannot be exported to ONNX: the sequence trunks "
            "pack padded sequences (pack_padded_sequence), which the TorchScript-based exporter writes without "
            "shape inference: the graph runs but disagrees with PyTorch on new sentence lengths (max abs "
            "difference 0.17 on a 1-layer BiLSTM tagger when we tried); use taskloom.load(RUN_DIR) from Python")


def example_inputs(predictor: Predictor, rows: int = 2, seed: int = 0) -> torch.Tensor:
    """A random float32 batch of the model's encoded input shape."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((rows, *predictor.input_shape), generator=generator)


def export_onnx(predictor: Predictor, out: str | Path, verify: bool = True) -> Path:
    """Write the ONNX graph to ``out`` (atomically) and its metadata with the preprocessing to ``out.json``.

    With ``verify`` (and onnxruntime installed) a graph whose outputs differ from PyTorch's by more than
    1e-4 on random rows (batch 17, not the traced 2) is refused rather than written.
    """
    check_exportable(predictor)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = predictor.output_names
    temporary = out.with_name(f".{out.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
            torch.onnx.export(
                predictor.module, (example_inputs(predictor),), str(temporary), dynamo=False,
                input_names=[INPUT_NAME], output_names=names, opset_version=OPSET,
                dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *names]},
            )
    except ExportError:
        raise
    except Exception as error:
        temporary.unlink(missing_ok=True)
        raise ExportError(f"{predictor.spec['architecture']['name']} could not be exported to ONNX "
                          f"({type(error).__name__}: {error})") from error
    if verify:
        try:
            differences = max_abs_difference(predictor, temporary, example_inputs(predictor, rows=17, seed=1))
        except ExportError:
            log.warning("onnxruntime is not installed: the ONNX graph is not checked against PyTorch")
        else:
            worst = max(differences.values(), default=0.0)
            if not worst <= VERIFY_TOLERANCE:
                temporary.unlink(missing_ok=True)
                raise ExportError(f"the exported graph disagrees with PyTorch (max abs difference {worst:.3g} on "
                                  f"{max(differences, key=differences.get)}); not written")
    os.replace(temporary, out)
    write_json_atomically(Path(f"{out}.json"), onnx_metadata(predictor))
    return out


def onnx_metadata(predictor: Predictor) -> dict[str, Any]:
    """What a runtime needs beside the graph: input name and shape, outputs, tasks and the preprocessing."""
    meta = predictor.metadata()
    return {"input": {"name": INPUT_NAME, "shape": ["batch", *predictor.input_shape], "dtype": "float32"},
            "outputs": predictor.output_names, "tasks": meta["tasks"], "columns": meta["columns"],
            "preprocessing": predictor.spec.get("preprocessing"), "checkpoint": predictor.checkpoint,
            "architecture": predictor.spec["architecture"], "trunk": predictor.spec["trunk"]}


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for ``path``."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ExportError('checking an ONNX graph needs onnxruntime: pip install "taskloom[serve]"') from error
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_abs_difference(predictor: Predictor, path: str | Path, inputs: torch.Tensor) -> dict[str, float]:
    """Per output, the largest absolute difference between onnxruntime and eager PyTorch on ``inputs``."""
    session = onnx_session(path)
    got = session.run(None, {INPUT_NAME: inputs.numpy().astype(np.float32)})
    expected = predictor.outputs(inputs)
    return {name: float(np.max(np.abs(g.astype(np.float64) - expected[name].astype(np.float64)), initial=0.0))
            for name, g in zip(predictor.output_names, got)}


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(f"{path}.json").read_text())


def export_program(predictor: Predictor, out: str | Path, verify: bool = True) -> Path:
    """Write a ``torch.export`` program (``torch.export.load(out).module()`` runs it, no taskloom needed) with
    a dynamic batch, and the same metadata as the ONNX export to ``out.json``."""
    if predictor.spec["input"].get("kind") == "mapping":
        raise ExportError("a sequence model takes a mapping of token ids and lengths and packs its sentences by "
                          "length (data-dependent shapes); torch-export here takes models over one input tensor")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = example_inputs(predictor, rows=4)
    try:
        program = torch.export.export(predictor.module, (example,),
                                      dynamic_shapes={"inputs": {0: torch.export.Dim("batch")}})
    except Exception as error:
        raise ExportError(f"{predictor.spec['architecture']['name']} could not be exported with torch.export "
                          f"({type(error).__name__}: {error})") from error
    if verify:
        check = example_inputs(predictor, rows=17, seed=1)
        with torch.no_grad():
            got, expected = program.module()(check), predictor.module(check)
        worst = max(float((a.double() - b.double()).abs().max()) for a, b in zip(got, expected))
        if not worst <= VERIFY_TOLERANCE:
            raise ExportError(f"the exported program disagrees with PyTorch eager (max abs difference {worst:.3g})")
    temporary = out.with_name(f".{out.name}.tmp")
    torch.export.save(program, str(temporary))
    os.replace(temporary, out)
    meta = onnx_metadata(predictor)
    meta["input"]["name"] = "inputs (positional)"
    write_json_atomically(Path(f"{out}.json"), meta)
    return out
