"""Multi-gate mixture of experts (Ma, Zhao, Yi, Chen, Hong & Chi 2018, "Modeling task relationships in
multi-task learning with multi-gate mixture-of-experts", KDD 2018): shared experts, one softmax gate per task."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from taskloom.sharing.checkpointing import run_trunk
from taskloom.sharing.layers import input_width, output_width
from taskloom.sharing.parameters import Reach, ReachSplit, params
from taskloom.task import Task


class Gate(nn.Module):
    """Softmax weights over ``num_experts`` from a linear map of the flattened input."""

    def __init__(self, in_features: int, num_experts: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_experts)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.linear(x.flatten(1)), dim=-1)


def mix(weights: Tensor, outputs: Sequence[Tensor]) -> Tensor:
    """Gate-weighted sum of expert outputs: weights (N, E), outputs E x (N, ...) -> (N, ...)."""
    stacked = torch.stack(list(outputs), dim=1)
    return (weights.reshape(*weights.shape, *[1] * (stacked.dim() - 2)) * stacked).sum(1)


class MMoE(ReachSplit):
    """Experts shared by all tasks; task k's head reads sum_i g_k(x)_i f_i(x)."""

    adversarial_input = "heads"
    checkpointable = True

    def __init__(self, experts: Sequence[nn.Module], gates: dict[str, nn.Module], heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(list(experts))
        self.gates = nn.ModuleDict(gates)
        self.heads = nn.ModuleDict({n: heads[n] for n in gates})
        self.task_names = list(self.gates)

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        outputs = [run_trunk(expert, inputs, self.checkpointing) for expert in self.experts]
        return {n: self.heads[n](mix(self.gates[n](inputs), outputs)) for n in self.task_names}

    def parameter_reach(self) -> Reach:
        groups: Reach = [(params(self.experts), frozenset(self.task_names))]
        return groups + [(params(self.gates[n], self.heads[n]), frozenset([n])) for n in self.task_names]

    def attach_task(self, task: Task) -> None:
        """A new gate over the existing experts and a head for ``task``."""
        gate = next(iter(self.gates.values()))
        self.gates[task.name] = Gate(gate.linear.in_features, len(self.experts))
        self.heads[task.name] = task.build_head(output_width(self.experts[0], "mmoe"))
        self.task_names.append(task.name)

    def detach_task(self, name: str) -> None:
        """Drop a task's gate and head; the experts and the other gates are untouched."""
        self.drop_task(name, self.gates, self.heads)


def build_mmoe(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task], num_experts: int = 4,
               in_features: int | None = None) -> MMoE:
    """``num_experts`` fresh trunks as experts; gates read the flattened input (width ``in_features``,
    read from the trunk's first nn.Linear when not given)."""
    if num_experts < 1:
        raise ValueError(f"mmoe.num_experts must be at least 1, got {num_experts}")
    experts = [trunk_factory() for _ in range(num_experts)]
    width = input_width(experts[0], in_features, "mmoe")
    gates = {t.name: Gate(width, num_experts) for t in tasks}
    heads = {t.name: t.build_head(output_width(experts[0], "mmoe")) for t in tasks}
    return MMoE(experts, gates, heads)
