"""One forward pass, every head, turned into predictions: the module that eager inference and ONNX share.

Per task it returns the prediction (and the probabilities where they apply) as named tensors:
binary: ``{task}`` (0/1 by the decision threshold) and ``{task}_prob``; multiclass: ``{task}``
(class index) and ``{task}_prob`` (one column per class); tagging: the same per token; multilabel:
``{task}`` (0/1 per label) and ``{task}_prob``; regression: ``{task}`` in the target's original units.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from taskloom.task import Task

SUPPORTED_KINDS = ("binary", "multiclass", "multilabel", "regression", "tagging")


def output_names(tasks: Sequence[Task]) -> list[str]:
    """The names of the module's outputs, in order."""
    names = []
    for task in tasks:
        names.append(task.name)
        if task.kind in ("binary", "multiclass", "multilabel", "tagging"):
            names.append(f"{task.name}_prob")
    return names


def logit_cut(threshold: float) -> float:
    """The logit above which ``sigmoid(logit) > threshold``."""
    return math.log(threshold / (1.0 - threshold))


class InferenceModule(nn.Module):
    """Wraps a multi-task model: inputs -> the tuple of :func:`output_names` tensors."""

    def __init__(self, model: nn.Module, tasks: Sequence[Task], thresholds: Mapping[str, float] | None = None,
                 target_scaling: Mapping[str, tuple[float, float]] | None = None) -> None:
        super().__init__()
        unsupported = [f"{t.name} ({t.kind})" for t in tasks if t.kind not in SUPPORTED_KINDS]
        if unsupported:
            raise ValueError(f"tasks {unsupported} have no prediction rule here; inference supports the kinds "
                             f"{SUPPORTED_KINDS}")
        self.model = model
        self.tasks = list(tasks)
        self.cuts = {name: logit_cut(t) for name, t in (thresholds or {}).items()}
        self.scaling = dict(target_scaling or {})
        self.names = output_names(self.tasks)

    def forward(self, inputs: Tensor) -> tuple[Tensor, ...]:
        outputs = self.model(inputs)
        out: list[Tensor] = []
        for task in self.tasks:
            raw = outputs[task.name]
            if task.kind == "binary":
                logit = raw.reshape(-1)
                out += [(logit > self.cuts.get(task.name, 0.0)).to(torch.int64), torch.sigmoid(logit)]
            elif task.kind in ("multiclass", "tagging"):
                out += [raw.argmax(-1), torch.softmax(raw, dim=-1)]
            elif task.kind == "multilabel":
                out += [(raw > 0).to(torch.int64), torch.sigmoid(raw)]
            else:
                value = raw.squeeze(-1) if raw.shape[-1] == 1 else raw
                if task.name in self.scaling:
                    mean, scale = self.scaling[task.name]
                    value = value * scale + mean
                out.append(value)
        return tuple(out)
