"""``taskloom.load(RUN_DIR)``: rebuild a trained model from its directory alone and apply it to new rows.

The CLI's ``predict``, the ONNX export and the HTTP server all go through :class:`Predictor`,
so there is one inference path: saved preprocessing, one forward pass, every task's prediction.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from taskloom.serve.encoding import InputError, RowEncoder, default_row_name
from taskloom.serve.inference import InferenceModule, output_names
from taskloom.task import Task
from taskloom.train.artifact import MODEL_SPEC_FILE
from taskloom.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"^(best|last|best-[^/\\]+)$")


def _multitask_cells(run_dir: Path) -> list[Path]:
    """The multi-task models a run's compare.json lists (one for ``run`` and ``train``; several for ``compare``)."""
    path = run_dir / "compare.json"
    if not path.is_file():
        return []
    compare = json.loads(path.read_text())
    cells: list[Path] = []
    for variant in compare.get("variants", {}).values():
        if variant.get("kind") != "multi":
            continue
        for by_task in (variant.get("cells") or {}).values():
            for cell in dict.fromkeys(by_task.values()):
                if run_dir / cell not in cells:
                    cells.append(run_dir / cell)
    return cells


def find_model_dir(path: str | Path) -> Path:
    """The model directory ``path`` names: itself, or a run's one multi-task model (``compare.json`` says which)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a run directory (or a model directory in it)")
    cells = _multitask_cells(path)
    for candidate in [path, path / "multitask"] + (cells if len(cells) == 1 else []):
        if (candidate / MODEL_SPEC_FILE).is_file():
            return candidate
    models = sorted(str(p.parent) for p in path.glob(f"**/{MODEL_SPEC_FILE}"))
    if models:
        shown = ", ".join(models[:12]) + (" ..." if len(models) > 12 else "")
        raise FileNotFoundError(f"{path} holds several models; pass one of: {shown}")
    raise FileNotFoundError(f"{path} has no {MODEL_SPEC_FILE} in it or its models; only runs trained by this "
                            "version of taskloom describe their model: retrain it")


def checkpoint_path(model_dir: Path, name: str | None = None) -> Path:
    """``best`` (or ``last`` when no validation chose a best), ``last`` or ``best-TASK`` of ``model_dir``."""
    directory = model_dir / "checkpoints"
    existing = sorted(p.stem for p in directory.glob("*.pt"))
    if name is None:
        name = "best" if "best" in existing else "last"
    if not CHECKPOINT_NAME.match(name):
        raise ValueError(f"--checkpoint: {name!r} is not best, last or best-TASK")
    path = directory / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {name!r} does not exist in {directory}; it holds: "
                                f"{existing or 'no checkpoints (has the run finished an epoch?)'}")
    return path


def tasks_from_spec(spec: Mapping[str, Any]) -> list[Task]:
    return [Task(t["name"], t["kind"], num_outputs=t["num_outputs"], target=t.get("target"),
                 main_metric=t.get("main_metric"), head_hidden=tuple(t.get("head_hidden") or ()),
                 label_names=t.get("label_names"), role=t.get("role", "main")) for t in spec["tasks"]]


def served_tasks(tasks: Sequence[Task], include_auxiliary: bool) -> list[Task]:
    """The tasks a predictor answers for: the main ones, or all with ``include_auxiliary`` (or when all are
    auxiliary, as in an auxiliary task's single-task model). Runs saved before roles existed are all main."""
    main = [t for t in tasks if t.role != "auxiliary"]
    return list(tasks) if include_auxiliary or not main else main


def build_from_spec(spec: Mapping[str, Any]) -> tuple[torch.nn.Module, list[Task]]:
    """The untrained model ``model.json`` describes (global random state untouched)."""
    from taskloom.sharing import ARCHITECTURES
    from taskloom.trunks import TRUNKS

    tasks = tasks_from_spec(spec)
    trunk_class = TRUNKS.get(spec["trunk"]["name"])
    arguments = dict(spec["trunk"]["arguments"])
    builder = ARCHITECTURES.get(spec["architecture"]["name"])
    with torch.random.fork_rng(devices=[]):
        model = builder(lambda: trunk_class(**arguments), tasks, **spec["architecture"]["options"])
    if spec["architecture"].get("per_task_models"):  # sequential curriculum, keep: per_task
        from taskloom.sharing.per_task import PerTaskModels

        model = PerTaskModels(model)
    return model, tasks


class Predictor:
    """A trained model with its saved preprocessing: ``predict`` takes raw rows (DataFrame or records)
    of a table run, or input tensors, and returns every main task's prediction from one forward pass.

    Auxiliary tasks (``role: auxiliary``) are trained to help and are not served unless ``include_auxiliary``;
    ``all_tasks`` lists every head of the model, ``tasks`` those served.
    """

    def __init__(self, model_dir: Path, spec: dict[str, Any], model: torch.nn.Module, tasks: list[Task],
                 checkpoint: str, unknown: str = "zeros", thresholds: bool = True,
                 include_auxiliary: bool = False) -> None:
        self.model_dir, self.spec, self.model, self.checkpoint = model_dir, spec, model, checkpoint
        self.all_tasks = list(tasks)
        self.include_auxiliary = include_auxiliary
        self.tasks = served_tasks(tasks, include_auxiliary)
        self.model.eval()
        self.encoder = RowEncoder.from_dict(spec["preprocessing"], unknown) if spec.get("preprocessing") else None
        self.thresholds = self._thresholds() if thresholds else {}
        scaling = {t["name"]: (t["target_standardization"]["mean"], t["target_standardization"]["scale"])
                   for t in spec["tasks"] if t.get("target_standardization")}
        self.module = InferenceModule(model, self.tasks, self.thresholds, scaling).eval()
        self.output_names = output_names(self.tasks)
        self._by_name = {t["name"]: t for t in spec["tasks"]}

    def _thresholds(self) -> dict[str, float]:
        out = {}
        chosen = self.spec.get("chosen_thresholds", {}).get(self.checkpoint, {})
        for task in self.spec["tasks"]:
            threshold = task.get("decision_threshold", 0.5)
            if threshold == "f1":
                if task["name"] not in chosen:
                    log.warning("task %r: no F1 threshold was chosen for checkpoint %r (training did not finish?); "
                                "0.5 is used", task["name"], self.checkpoint)
                threshold = chosen.get(task["name"], 0.5)
            if task["kind"] == "binary":
                out[task["name"]] = float(threshold)
        return out

    # -- what the model expects and gives ---------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def feature_columns(self) -> list[str]:
        """The raw columns a row must carry (empty for models over tensors, e.g. images)."""
        return self.encoder.columns if self.encoder is not None else []

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One encoded row's shape (what :meth:`outputs` and the ONNX graph take)."""
        if self.encoder is not None:
            return (self.encoder.width,)
        return tuple(self.spec["input"]["shape"])

    def pick_tasks(self, tasks: Sequence[str] | None) -> list[str]:
        if not tasks:
            return self.task_names
        unknown = [t for t in tasks if t not in self.task_names]
        hidden = [t.name for t in self.all_tasks if t.name in unknown]
        if hidden:
            raise InputError(f"tasks: {hidden} are auxiliary tasks, not served by default; load with "
                             "include_auxiliary=True (CLI: --include-auxiliary) to get them", field="tasks")
        if unknown:
            raise InputError(f"tasks: unknown task(s) {unknown}; this model predicts {self.task_names}", field="tasks")
        return list(dict.fromkeys(tasks))

    # -- the inference path -------------------------------------------------------------------
    def encode(self, frame: pd.DataFrame, name_row: Callable[[int], str] = default_row_name,
               first_row: int = 0) -> Tensor:
        """Raw rows of a table run to the model's input matrix, with the training preprocessing."""
        if self.encoder is None:
            raise InputError("this model was not trained on a table; pass input tensors of shape "
                             f"(rows, {', '.join(map(str, self.input_shape))})")
        return torch.from_numpy(self.encoder.encode_frame(frame, name_row, first_row))

    def encode_records(self, records: Sequence[Mapping[str, Any]], first_row: int = 0) -> Tensor:
        if self.encoder is None:
            raise InputError("this model was not trained on a table, so it takes no JSON rows", field="rows")
        return torch.from_numpy(self.encoder.encode_records(records, first_row=first_row))

    def _check_inputs(self, inputs: Any) -> Any:
        if self.spec["input"].get("kind") == "mapping":  # token ids and lengths of a sequence model
            keys = self.spec["input"]["keys"]
            if not isinstance(inputs, Mapping) or sorted(inputs) != keys:
                raise InputError(f"this sequence model takes a mapping with keys {keys}", field="inputs")
            return dict(inputs)
        inputs = torch.as_tensor(inputs)
        if tuple(inputs.shape[1:]) != self.input_shape:
            raise InputError(f"inputs have shape {tuple(inputs.shape)}; this model takes "
                             f"(rows, {', '.join(map(str, self.input_shape))})", field="inputs")
        return inputs.to(torch.float32) if inputs.is_floating_point() else inputs

    @staticmethod
    def _batches(inputs: Any, batch_size: int) -> list[Any]:
        n = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
        if isinstance(inputs, dict):
            return [{k: v[i:i + batch_size] for k, v in inputs.items()} for i in range(0, max(n, 1), batch_size)]
        return [inputs[i:i + batch_size] for i in range(0, max(n, 1), batch_size)]

    @torch.inference_mode()
    def logits(self, inputs: Any, batch_size: int = 4096) -> dict[str, Tensor]:
        """The model's raw outputs per task (logits, values) on encoded inputs."""
        parts = [self.model(batch) for batch in self._batches(self._check_inputs(inputs), batch_size)]
        return {name: torch.cat([p[name] for p in parts]) for name in self.task_names}

    @torch.inference_mode()
    def outputs(self, inputs: Any, batch_size: int = 4096) -> dict[str, np.ndarray]:
        """Every output of :class:`InferenceModule` on encoded inputs, as arrays keyed by output name."""
        parts = [self.module(batch) for batch in self._batches(self._check_inputs(inputs), batch_size)]
        return {name: torch.cat([p[k] for p in parts]).numpy() for k, name in enumerate(self.output_names)}

    def columns(self, outputs: Mapping[str, np.ndarray], tasks: Sequence[str] | None = None) -> dict[str, list]:
        """The output table's columns: per task the prediction, then its probabilities (see the README)."""
        out: dict[str, list] = {}
        for name in self.pick_tasks(tasks):
            spec = self._by_name[name]
            kind, value = spec["kind"], outputs[name]
            if kind == "tagging":
                raise InputError(f"task {name!r} tags tokens, which a table of rows cannot hold; use "
                                 "Predictor.outputs(inputs) for its per-token tags and probabilities", field="tasks")
            if kind == "binary":
                out[name] = value.tolist()
                out[f"{name}_prob"] = outputs[f"{name}_prob"].astype(np.float64).tolist()
            elif kind == "multiclass":
                classes = spec.get("class_names") or [str(j) for j in range(spec["num_outputs"])]
                out[name] = [classes[j] for j in value.tolist()] if spec.get("class_names") else value.tolist()
                probabilities = outputs[f"{name}_prob"].astype(np.float64)
                for j, label in enumerate(classes):
                    out[f"{name}_prob_{label}"] = probabilities[:, j].tolist()
            elif kind == "multilabel":
                labels = spec.get("label_names") or [str(j) for j in range(spec["num_outputs"])]
                probabilities = outputs[f"{name}_prob"].astype(np.float64)
                for j, label in enumerate(labels):
                    out[f"{name}_{label}"] = value[:, j].tolist()
                for j, label in enumerate(labels):
                    out[f"{name}_prob_{label}"] = probabilities[:, j].tolist()
            else:
                values = value.astype(np.float64)
                if values.ndim == 1:
                    out[name] = values.tolist()
                else:
                    for j in range(values.shape[1]):
                        out[f"{name}_{j}"] = values[:, j].tolist()
        return out

    def predict(self, data: Any, tasks: Sequence[str] | None = None, batch_size: int = 4096,
                name_row: Callable[[int], str] = default_row_name, first_row: int = 0) -> pd.DataFrame:
        """Predictions for raw rows (a DataFrame of a table run: its non-feature columns pass through,
        an input column named like an output gets the suffix ``_input``) or for input tensors."""
        names = self.pick_tasks(tasks)
        if isinstance(data, pd.DataFrame):
            inputs = self.encode(data, name_row, first_row)
            predicted = pd.DataFrame(self.columns(self.outputs(inputs, batch_size), names), index=data.index)
            extra = data[[c for c in data.columns if c not in set(self.feature_columns)]]
            extra = extra.rename(columns={c: self._free_name(c, predicted.columns, extra.columns)
                                          for c in extra.columns if c in predicted.columns})
            return pd.concat([extra, predicted], axis=1)
        return pd.DataFrame(self.columns(self.outputs(data, batch_size), names))

    @staticmethod
    def _free_name(column: str, taken: Sequence[str], own: Sequence[str]) -> str:
        name = f"{column}_input"
        while name in set(taken) or name in set(own):
            name += "_input"
        return name

    def predict_records(self, records: Sequence[Mapping[str, Any]], tasks: Sequence[str] | None = None
                        ) -> list[dict[str, Any]]:
        """JSON records in, one dict of predictions per row out (what the server answers)."""
        columns = self.columns(self.outputs(self.encode_records(records)), tasks)
        return rows_of(columns)

    def metadata(self) -> dict[str, Any]:
        """Tasks, kinds, classes, thresholds, expected columns and types, and the run's recorded results."""
        tasks = []
        served = set(self.task_names)
        for spec in self.spec["tasks"]:
            if spec["name"] not in served:
                continue
            entry = {k: spec.get(k) for k in ("name", "kind", "num_outputs", "target", "main_metric")}
            entry["role"] = spec.get("role", "main")
            for key in ("class_names", "label_names", "positive_class"):
                if spec.get(key) is not None:
                    entry[key] = spec[key]
            if spec["name"] in self.thresholds:
                entry["decision_threshold"] = self.thresholds[spec["name"]]
            tasks.append(entry)
        return {
            "model_dir": str(self.model_dir),
            "checkpoint": self.checkpoint,
            "architecture": self.spec["architecture"],
            "trunk": self.spec["trunk"],
            "tasks": tasks,
            "outputs": self.output_names,
            "columns": self.encoder.column_types() if self.encoder is not None else {},
            "input_shape": list(self.input_shape),
            **recorded_results(self.model_dir),
        }


def rows_of(columns: Mapping[str, list]) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


def recorded_results(model_dir: Path) -> dict[str, Any]:
    """The test metrics of this model and, when its run compared it with single-task models, that comparison."""
    out: dict[str, Any] = {}
    own = model_dir / "results.json"
    if own.is_file():
        out["test_metrics"] = json.loads(own.read_text()).get("test")
    for run_dir in list(model_dir.parents)[:3]:
        path = run_dir / "compare.json"
        if not path.is_file():
            continue
        compare = json.loads(path.read_text())
        cell = model_dir.relative_to(run_dir).as_posix()
        for name, variant in compare.get("variants", {}).items():
            mine = any(cell in by_task.values() for by_task in (variant.get("cells") or {}).values())
            analysis = ((compare.get("analysis") or {}).get("variants") or {}).get(name)
            if mine and analysis and compare.get("baseline") and name != compare["baseline"]:
                keys = ("metric", "higher_is_better", "mean", "baseline_mean", "relative_change", "low", "high",
                        "verdict", "covers")
                out["single_task_comparison"] = {
                    "variant": name,
                    "tasks": {t: {k: row.get(k) for k in keys} for t, row in analysis["tasks"].items()},
                    "delta_m": {k: (analysis.get("delta_m") or {}).get(k) for k in ("mean", "low", "high")},
                }
        break
    return out


def load(run_dir: str | Path, checkpoint: str | None = None, unknown: str = "zeros",
         thresholds: bool = True, include_auxiliary: bool = False) -> Predictor:
    """Rebuild the model of a run (``RUN_DIR`` with one multi-task model, or any model directory) for inference.

    ``checkpoint``: ``best`` (default; ``last`` when no validation chose one), ``last`` or ``best-TASK``.
    ``unknown``: what a category never seen in training becomes, ``zeros`` (as in training) or ``error``.
    ``include_auxiliary``: also serve the auxiliary tasks (by default only the main tasks are predicted).
    """
    model_dir = find_model_dir(run_dir)
    spec = json.loads((model_dir / MODEL_SPEC_FILE).read_text())
    path = checkpoint_path(model_dir, checkpoint)
    model, tasks = build_from_spec(spec)
    state = load_checkpoint(path)
    if set(state.get("task_names", [])) != {t.name for t in tasks}:
        raise ValueError(f"checkpoint {path} is for tasks {state.get('task_names')}, but {model_dir / MODEL_SPEC_FILE} "
                         f"describes {[t.name for t in tasks]}")
    model.load_state_dict(state["model"])
    return Predictor(model_dir, spec, model, tasks, path.stem, unknown, thresholds, include_auxiliary)
