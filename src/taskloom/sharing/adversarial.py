"""Adversarial auxiliary tasks through a gradient-reversal layer (Ganin & Lempitsky 2015,
"Unsupervised domain adaptation by backpropagation", ICML 2015): the shared layers learn to defeat them."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from taskloom.sharing.base import MultiTaskModule
from taskloom.sharing.hard import MultiTaskModel
from taskloom.task import Task


class GradientReversal(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by -strength."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, strength: float) -> Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.strength * grad, None


def reverse_gradient(x: Tensor, strength: float = 1.0) -> Tensor:
    """``x`` unchanged, with its gradient reversed and scaled by ``strength`` (lambda)."""
    return GradientReversal.apply(x, strength)


class GradientReversalLayer(nn.Module):
    """Module form of :func:`reverse_gradient`."""

    def __init__(self, strength: float = 1.0) -> None:
        super().__init__()
        self.strength = float(strength)

    def forward(self, x: Tensor) -> Tensor:
        return reverse_gradient(x, self.strength)

    def extra_repr(self) -> str:
        return f"strength={self.strength}"


def make_adversarial(model: MultiTaskModule, names: Sequence[str], strength: float = 1.0) -> MultiTaskModule:
    """Put a gradient-reversal layer in front of the named tasks' heads (in place; returns ``model``).

    Works where heads read one shared representation: hard sharing and low-level supervision
    (heads), MMoE (heads on the gated mixture), hybrid (the towers on the shared bottom).
    """
    where = getattr(model, "adversarial_input", "heads" if isinstance(model, MultiTaskModel) else None)
    modules = getattr(model, where, None) if where else None
    if not isinstance(modules, nn.ModuleDict):
        raise ValueError(
            f"adversarial: {type(model).__name__} has no per-task modules reading a shared representation; "
            "use it with hard, low_level, mmoe or hybrid"
        )
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"adversarial: unknown task(s) {unknown}; the tasks are {list(modules)}")
    for name in names:
        modules[name] = nn.Sequential(GradientReversalLayer(strength), modules[name])
    return model


def build_adversarial(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task], adversarial: Sequence[str] = (),
                      strength: float = 1.0, base: str = "hard", **options: Any) -> MultiTaskModule:
    """Architecture ``base`` (built with ``options``) with the ``adversarial`` tasks behind a gradient reversal."""
    from taskloom.sharing import ARCHITECTURES

    if base == "adversarial":
        raise ValueError("adversarial.base: name the architecture to wrap, such as 'hard'")
    if not adversarial:
        raise ValueError("adversarial.adversarial: name at least one task to make adversarial")
    model = ARCHITECTURES.get(base)(trunk_factory, tasks, **options)
    return make_adversarial(model, list(adversarial), strength)
