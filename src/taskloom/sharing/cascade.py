"""Cascade after the joint many-task model (Hashimoto, Xiong, Tsuruoka & Socher 2017, "A joint many-task
model: growing a neural network for multiple NLP tasks", EMNLP 2017): higher tasks read lower tasks'
label embeddings."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from taskloom.sharing.layers import check_task_keys
from taskloom.sharing.low_level import DepthTapped, tap_width, task_depths
from taskloom.sharing.parameters import Reach, params
from taskloom.task import Task


def label_distribution(task: Task, output: Tensor) -> Tensor:
    """What a lower task passes up: softmax (multiclass, and per token for tagging), [1 - p, p] (binary),
    sigmoids (multilabel), the values themselves (regression)."""
    if task.kind in ("multiclass", "tagging"):
        return torch.softmax(output, dim=-1)
    if task.kind == "binary":
        p = torch.sigmoid(output.reshape(output.shape[0], 1))  # shape[0], not len(): ONNX keeps the batch dynamic
        return torch.cat([1 - p, p], dim=-1)
    if task.kind == "multilabel":
        return torch.sigmoid(output)
    return output.reshape(output.shape[0], -1)


def distribution_size(task: Task) -> int:
    return 2 if task.kind == "binary" else task.num_outputs


class Cascade(DepthTapped):
    """Tasks in order; task k's head reads the trunk at its depth concatenated with the label
    embeddings (probability-weighted embedding vectors) of every lower task.

    ``successive`` is the paper's successive regularization strength delta: the penalty
    delta * ||theta - theta_snapshot||^2 on the shared parameters, relative to the copy taken
    by ``snapshot()``: at construction, then by ``on_epoch_end`` (the trainer calls it after
    every epoch), so each epoch is pulled towards the parameters the previous one ended with.
    The paper trains the tasks in turn and snapshots after each lower task's epoch; joint
    training makes that one snapshot per epoch. Sequence trunks (``bilstm``, ``transformer``)
    are tapped by layer number, so label embeddings are per token.
    """

    adversarial_input = None

    def __init__(self, trunk: nn.Module, tasks: Sequence[Task], depths: Mapping[str, int],
                 embedding_dim: int = 16, successive: float = 0.0) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.task_names = [t.name for t in tasks]
        self._init_trunk(trunk, depths)
        self.embeddings = nn.ParameterDict({
            t.name: nn.Parameter(torch.randn(distribution_size(t), embedding_dim) / embedding_dim ** 0.5)
            for t in self.tasks[:-1]
        })
        self.heads = nn.ModuleDict({
            t.name: t.build_head(self.tap_widths[depths[t.name]] + k * embedding_dim)
            for k, t in enumerate(self.tasks)
        })
        self.successive = float(successive)
        self._snapshot_names: list[str] = []
        if self.successive:
            self.snapshot()

    def label_embedding(self, task: Task, output: Tensor) -> Tensor:
        """The lower task's predicted distribution times its label embedding matrix."""
        return label_distribution(task, output) @ self.embeddings[task.name]

    def head_inputs(self, inputs: Any) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Every task's output and what its head read (trunk features, then lower label embeddings)."""
        features = self.features(inputs)
        outputs: dict[str, Tensor] = {}
        read: dict[str, Tensor] = {}
        lower: list[Tensor] = []
        for task in self.tasks:
            read[task.name] = torch.cat([features[self.depths[task.name]], *lower], dim=-1)
            outputs[task.name] = self.heads[task.name](read[task.name])
            if task.name in self.embeddings:
                lower.append(self.label_embedding(task, outputs[task.name]))
        return outputs, read

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        return self.head_inputs(inputs)[0]

    def _above(self, name: str) -> set[str]:
        return set(self.task_names[self.task_names.index(name):])

    def parameter_reach(self) -> Reach:
        groups = self.stage_reach(self._above)
        for n in self.task_names:
            groups.append((params(self.heads[n]), frozenset(self._above(n))))
            if n in self.embeddings:
                groups.append((params(self.embeddings[n]), frozenset(self._above(n) - {n})))
        return groups

    @torch.no_grad()
    def snapshot(self) -> None:
        """Remember the shared parameters now; the successive penalty pulls them back towards this copy."""
        shared = self.structural_shared()
        if len(shared) == len(self._snapshot_names) and all(
                getattr(self, name).shape == p.shape for name, p in zip(self._snapshot_names, shared)):
            for name, p in zip(self._snapshot_names, shared):
                getattr(self, name).copy_(p)
            return
        for name in self._snapshot_names:
            delattr(self, name)
        self._snapshot_names = []
        for i, p in enumerate(shared):
            name = f"snapshot_{i}"
            self.register_buffer(name, p.detach().clone())
            self._snapshot_names.append(name)

    def on_epoch_end(self, epoch: int) -> None:
        """Trainer hook: refresh the successive-regularization snapshot (nothing without ``successive``)."""
        if self.successive:
            self.snapshot()

    def regularization(self) -> Tensor | None:
        if not self.successive or not self._snapshot_names:
            return None
        shared = self.structural_shared()
        terms = [(p - getattr(self, s)).pow(2).sum() for p, s in zip(shared, self._snapshot_names)]
        return self.successive * torch.stack(terms).sum() if terms else None


def build_cascade(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task], order: Sequence[str] | None = None,
                  depths: Mapping[str, int] | None = None, embedding_dim: int = 16,
                  successive: float = 0.0) -> Cascade:
    """Tasks in ``order`` (default as given), each tapping the trunk at ``depths`` (default the top):
    layer indices of a Sequential trunk, or layer numbers 1..num_layers of a sequence trunk."""
    by_name = {t.name: t for t in tasks}
    order = list(order) if order is not None else list(by_name)
    check_task_keys(order, list(by_name), "cascade.order")
    if sorted(order) != sorted(by_name):
        raise ValueError(f"cascade.order: list every task exactly once; got {order} for tasks {list(by_name)}")
    trunk = trunk_factory()
    ordered = [by_name[n] for n in order]
    at = task_depths(trunk, ordered, depths, "cascade.depths")
    for task in ordered:
        tap_width(trunk, at[task.name], f"cascade.depths.{task.name}")
    return Cascade(trunk, ordered, at,
                   embedding_dim=embedding_dim, successive=successive)
