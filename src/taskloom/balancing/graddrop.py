"""GradDrop (Chen et al., NeurIPS 2020, "Just pick a sign"): keep, per unit, only gradients of one random sign.

With per-task gradients g_i of a layer's activations A, the sign purity of each unit is
P = (1 + sum_i s_i / sum_i |s_i|) / 2, where s_i = sum over the batch of sign(A) * g_i (the
paper's batch reduction: the sign of the input makes per-sample gradients comparable). With
U ~ Uniform(0, 1) per unit, task i keeps its gradient where P > U and s_i > 0 or P <= U and
s_i < 0, one mask per unit broadcast over the batch (plus a ``leak`` fraction of the rest).
In parameter mode every coordinate of the K x P matrix is a unit (no batch to reduce).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from taskloom.balancing.base import SeededGenerator
from taskloom.balancing.gradient import GradientBalancer


def _draw_uniform(count: int, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``count`` Uniform(0, 1) draws on ``like``'s device (on the generator's, then moved, if it lives elsewhere)."""
    device = like.device if generator is None else generator.device
    return torch.rand(count, generator=generator, dtype=like.dtype, device=device).to(like.device)


def graddrop(grads: Tensor, generator: torch.Generator | None = None, leak: float = 0.0,
             uniform: Tensor | None = None, representation: Tensor | None = None) -> Tensor:
    """GradDrop's update from the K x P matrix of per-task gradients.

    With ``representation`` (B x ...; P = its size) the rows are gradients of it and the
    units are its entries per sample, masked alike across the batch; without it each of the
    P coordinates is a unit. ``uniform`` (one value in [0, 1) per unit) replaces the draw.
    A unit keeps its positive side where P > U, else its negative side (so a unit whose
    gradients all share one sign always keeps them).
    """
    if not 0 <= leak <= 1:
        raise ValueError(f"graddrop leak must be in [0, 1], got {leak!r}")
    k = grads.shape[0]
    if representation is None:
        signed = grads
    else:
        if representation.numel() != grads.shape[1]:
            raise ValueError(f"graddrop: the representation has {representation.numel()} entries but the "
                             f"gradients {grads.shape[1]}")
        batch = representation.shape[0] if representation.dim() else 1
        per_sample = grads.reshape(k, batch, -1)  # K x B x units
        signed = (per_sample * representation.reshape(1, batch, -1).sign().to(grads.dtype)).sum(dim=1)
    total, magnitude = signed.sum(dim=0), signed.abs().sum(dim=0)
    if uniform is None:
        uniform = _draw_uniform(total.numel(), total, generator)
    positive_part = (total + magnitude).mul_(0.5)  # sum of the positive s_i; P = positive_part / magnitude
    positive = positive_part > uniform.to(total).reshape(total.shape) * magnitude  # P > U, without dividing
    if representation is None:  # each entry's own sign decides: the kept sum is the positive or negative part
        kept = torch.where(positive, positive_part, positive_part - magnitude)
        return kept if leak == 0 else leak * total + (1 - leak) * kept
    keep = torch.where(positive, signed > 0, signed < 0).to(grads.dtype)  # K x units, the same for the batch
    if leak:
        keep = leak + (1 - leak) * keep
    return (per_sample * keep.unsqueeze(1)).sum(dim=0).reshape(-1)


class GradDrop(GradientBalancer):
    """GradDrop (Chen et al. 2020): sign-consistency gradient dropout, the paper's way on the representation.

    Draws its uniforms on the gradients' device with its own generator (seeded by ``seed``),
    whose state is saved with the balancer, so a resumed run draws the same numbers.
    """

    combines_representation = True

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 leak: float = 0.0, seed: int = 0) -> None:
        super().__init__(task_names, mode=mode, batched=batched)
        if not 0 <= leak <= 1:
            raise ValueError(f"balancing.options.leak must be in [0, 1], got {leak!r}")
        self.leak = leak
        self.random = SeededGenerator(seed)

    def combine(self, grads: Tensor, names: Sequence[str],
                representation: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        generator = self.random.on(grads.device)
        return graddrop(grads, generator, self.leak, representation=representation), None

    def get_extra_state(self) -> Any:
        return self.random.state()

    def set_extra_state(self, state: Any) -> None:
        self.random.load(state)
