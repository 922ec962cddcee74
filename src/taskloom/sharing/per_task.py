"""One copy of a multi-task model per task: task t is answered by its own copy (the per-task predictors
``w_t`` of sequential multi-task learning, Pentina, Sharmanska & Lampert 2015, CVPR).

Copy t keeps t's model as its stage left it: the shared parameters as they were then and t's own head.
Only those are trainable in copy t (the other tasks' heads of a copy are never used and stay frozen), so
the model has K times the shared parameters plus one head per task.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import Parameter

from taskloom.sharing.base import MultiTaskModule


class PerTaskModels(MultiTaskModule):
    """``members[t]`` is a copy of ``model`` that answers task t; ``activate(t)`` leaves only copy t trainable."""

    def __init__(self, model: MultiTaskModule) -> None:
        super().__init__()
        self.task_names = list(model.task_names)
        self.members = nn.ModuleDict({name: copy.deepcopy(model) for name in self.task_names})
        self._shared: dict[str, list[Parameter]] = {}
        self._own: dict[str, list[Parameter]] = {}
        for name, member in self.members.items():
            self._shared[name] = list(member.shared_parameters())
            self._own[name] = list(member.task_parameters(name))
            for other in self.task_names:
                if other != name:
                    for parameter in member.task_parameters(other):
                        parameter.requires_grad_(False)
        self.active: str | None = None

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        return {name: self.members[name](inputs)[name] for name in self.task_names}

    def member_parameters(self, name: str) -> list[Parameter]:
        """Task ``name``'s model (trainable or not now): its copy's shared parameters, then its head."""
        return [*self._shared[name], *self._own[name]]

    def trained_parameters(self) -> list[Parameter]:
        """Every copy's model (K times the shared parameters, one head each), trainable now or not."""
        return [p for name in self.task_names for p in self.member_parameters(name)]

    def shared_parameters(self) -> list[Parameter]:
        return [p for name in self.task_names for p in self._shared[name] if p.requires_grad]

    def task_parameters(self, name: str) -> list[Parameter]:
        return [p for p in self._own[name] if p.requires_grad]

    def regularization(self) -> Tensor | None:
        """The active copy's own penalty (soft sharing's tie); the copies of finished stages stay as they are."""
        return None if self.active is None else self.members[self.active].regularization()

    def activate(self, name: str | None) -> None:
        """Leave only task ``name``'s copy trainable (every copy with None); the others get no gradient."""
        if name is not None and name not in self.members:
            raise KeyError(f"unknown task {name!r}; this model has tasks {self.task_names}")
        for task in self.task_names:
            for parameter in self.member_parameters(task):
                parameter.requires_grad_(name is None or task == name)
        self.active = name

    def transfer(self, source: str, target: str) -> bool:
        """Start ``target``'s copy from ``source``'s model: its shared parameters and buffers, and its head when
        the heads' shapes all match (True then; otherwise ``target`` keeps its own head as it is)."""
        with torch.no_grad():
            for s, t in zip(self._shared[source], self._shared[target]):
                t.copy_(s)
            for s, t in zip(self.members[source].buffers(), self.members[target].buffers()):
                t.copy_(s)
            heads = self._own[source], self._own[target]
            if len(heads[0]) != len(heads[1]) or any(s.shape != t.shape for s, t in zip(*heads)):
                return False
            for s, t in zip(*heads):
                t.copy_(s)
        return True
