"""Which task losses reach which parameters, and parameter counts.

Architectures list their parameter groups with the set of tasks whose loss reaches each;
shared parameters are those reached by more than one task, task parameters those reached
by that task only (the split gradient-level balancing works on).
"""
from __future__ import annotations

from torch import nn
from torch.nn import Parameter

from taskloom.sharing.base import MultiTaskModule, unique

Reach = list[tuple[list[Parameter], frozenset[str]]]


class ReachSplit(MultiTaskModule):
    """A MultiTaskModule whose parameter roles follow from ``parameter_reach()``.

    Subclasses return ``[(parameters, tasks whose loss reaches them), ...]`` covering every
    parameter; frozen parameters (``requires_grad=False``) are left out of both roles.
    """

    def parameter_reach(self) -> Reach:
        raise NotImplementedError

    def shared_parameters(self) -> list[Parameter]:
        return unique(p for params, reach in self.parameter_reach() if len(reach) > 1 for p in params)

    def task_parameters(self, name: str) -> list[Parameter]:
        if name not in self.task_names:
            raise KeyError(f"unknown task {name!r}; this model has tasks {self.task_names}")
        return unique(p for params, reach in self.parameter_reach() if reach == {name} for p in params)

    def structural_shared(self) -> list[Parameter]:
        """Parameters more than one task reaches, frozen or not."""
        out: list[Parameter] = []
        for params, reach in self.parameter_reach():
            if len(reach) > 1:
                out.extend(p for p in params if all(p is not q for q in out))
        return out


def params(*modules: nn.Module | Parameter | None) -> list[Parameter]:
    """The parameters of several modules (or single parameters), in order."""
    out: list[Parameter] = []
    for m in modules:
        if m is None:
            continue
        out.extend([m] if isinstance(m, Parameter) else m.parameters())
    return out


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters in ``model`` (each tensor once; trainable ones by default)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
