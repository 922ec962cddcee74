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

from taskloom.balancing import gramian_engine
from taskloom.balancing.base import SeededGenerator
from taskloom.balancing.gradient import GradientBalancer
from taskloom.balancing.gramian_engine import (
    TaskRows,
    chunk_bounds,
    flat_pieces,
    task_rows,
)
from taskloom.balancing.jacobian import write_gradient
from taskloom.sharing.base import MultiTaskModule


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
    if representation is None:
        signed = grads
    else:
        if representation.numel() != grads.shape[1]:
            raise ValueError(f"graddrop: the representation has {representation.numel()} entries but the "
                             f"gradients {grads.shape[1]}")
        per_sample, signed = _signed_units(grads, representation)  # K x B x units, K x units
    total, magnitude = signed.sum(dim=0), signed.abs().sum(dim=0)
    if uniform is None:
        uniform = _draw_uniform(total.numel(), total, generator)
    positive_part, positive = _positive_side(total, magnitude, uniform)
    if representation is None:
        return _kept_sum(total, magnitude, positive_part, positive, leak)
    return _masked_sum(per_sample, signed, positive, leak)


def _signed_units(grads: Tensor, representation: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of gradients of the representation as K x batch x units, and their sign-weighted batch sums s_i."""
    batch = representation.shape[0] if representation.dim() else 1
    per_sample = grads.reshape(grads.shape[0], batch, -1)
    return per_sample, (per_sample * representation.reshape(1, batch, -1).sign().to(grads.dtype)).sum(dim=1)


def _positive_side(total: Tensor, magnitude: Tensor, uniform: Tensor) -> tuple[Tensor, Tensor]:
    """Per unit, the sum of the positive s_i and whether the unit keeps its positive side (P > U)."""
    positive_part = (total + magnitude).mul_(0.5)  # P = positive_part / magnitude
    return positive_part, positive_part > uniform.to(total).reshape(total.shape) * magnitude  # without dividing


def _kept_sum(total: Tensor, magnitude: Tensor, positive_part: Tensor, positive: Tensor, leak: float) -> Tensor:
    """Parameter mode: each entry's own sign decides, so the kept sum is the positive or the negative part."""
    kept = torch.where(positive, positive_part, positive_part - magnitude)
    return kept if leak == 0 else leak * total + (1 - leak) * kept


def _kept_sum_in_place(total: Tensor, magnitude: Tensor, generator: torch.Generator | None, leak: float) -> Tensor:
    """Parameter mode's update from the sums, as :func:`graddrop` draws and computes it, overwriting the sums.

    The same uniforms and the same floating-point operations, with fewer P-sized temporaries.
    """
    uniform = _draw_uniform(total.numel(), total, generator)
    positive_part = (total.add(magnitude) if leak else total.add_(magnitude)).mul_(0.5)
    positive = positive_part > uniform.mul_(magnitude)
    del uniform
    negative_part = magnitude.sub_(positive_part).neg_()  # positive_part - magnitude, exactly
    kept = torch.where(positive, positive_part, negative_part, out=negative_part)
    return kept if leak == 0 else leak * total + (1 - leak) * kept


def _masked_sum(per_sample: Tensor, signed: Tensor, positive: Tensor, leak: float) -> Tensor:
    """Representation mode: the sum of the gradients each task keeps, one mask per unit for the whole batch."""
    keep = torch.where(positive, signed > 0, signed < 0).to(per_sample.dtype)  # K x units
    if leak:
        keep = leak + (1 - leak) * keep
    return (per_sample * keep.unsqueeze(1)).sum(dim=0).reshape(-1)


def _streamed_sums(rows: TaskRows, k: int) -> tuple[Tensor, Tensor]:
    """Parameter mode: sum_i g_i and sum_i |g_i| per coordinate, from one task's gradient pieces at a time."""
    size = sum(p.numel() for p in rows.shared)
    device = rows.shared[0].device
    total = torch.zeros(size, dtype=rows.dtype, device=device)
    magnitude = torch.zeros(size, dtype=rows.dtype, device=device)
    for index in range(k):
        for offset, flat in flat_pieces(gramian_engine.task_pieces(rows, index), rows.shared, rows.dtype, rows.factor):
            total[offset:offset + flat.numel()].add_(flat)
            magnitude[offset:offset + flat.numel()].add_(flat.abs())
    return total, magnitude


def _chunked_sums(rows: TaskRows, bounds: list[tuple[int, int]], units: Tensor | None) -> tuple[Tensor, Tensor]:
    """sum_i s_i and sum_i |s_i| per unit, from the rows of each chunk in turn (s_i = g_i in parameter mode)."""
    total = magnitude = None
    for start, stop in bounds:
        block = rows(start, stop)
        signed = block if units is None else _signed_units(block, units)[1]
        del block
        total = signed.sum(dim=0) if total is None else total.add_(signed.sum(dim=0))
        magnitude = signed.abs().sum(dim=0) if magnitude is None else magnitude.add_(signed.abs().sum(dim=0))
        del signed
    return total, magnitude


class GradDrop(GradientBalancer):
    """GradDrop (Chen et al. 2020): sign-consistency gradient dropout, the paper's way on the representation.

    Draws its uniforms on the gradients' device with its own generator (seeded by ``seed``),
    whose state is saved with the balancer, so a resumed run draws the same numbers. With
    ``task_chunk`` it needs per unit only sum_i s_i and sum_i |s_i| (one pass over the tasks;
    representation mode recomputes each task's row once more for the masked sum): the same draws
    and update as the full engine, holding one task's gradient at a time (B of them where whole
    rows are needed: data parallelism or vmap in parameter mode).
    """

    combines_representation = True

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 leak: float = 0.0, seed: int = 0, task_chunk: int | None = None, engine: str = "auto") -> None:
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
        if not 0 <= leak <= 1:
            raise ValueError(f"balancing.options.leak must be in [0, 1], got {leak!r}")
        self.leak = leak
        self.random = SeededGenerator(seed)

    def combine(self, grads: Tensor, names: Sequence[str],
                representation: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        generator = self.random.on(grads.device)
        return graddrop(grads, generator, self.leak, representation=representation), None

    def check_task_chunk(self) -> None:
        """GradDrop accepts ``task_chunk`` (its sums over tasks are taken chunk by chunk)."""

    def _chunked_backward(self, values: list[Tensor], names: list[str], model: MultiTaskModule,
                          representation: Tensor | None, factor: Tensor | None) -> None:
        """GradDrop's step from sums over the tasks, a few rows at a time (K task passes; 2K in representation mode)."""
        rows = task_rows(self, values, names, model, representation, factor)
        if rows is None:
            return
        units = None if rows.shared else representation.detach()
        # a task's gradient of z comes from its head alone: one task at a time costs nothing more
        bounds = chunk_bounds(len(values), self.task_chunk if units is None else 1)
        if rows.streams(self.task_chunk):  # one task's per-parameter pieces at a time, never a whole row
            total, magnitude = _streamed_sums(rows, len(values))
        else:
            total, magnitude = _chunked_sums(rows, bounds, units)
        if factor is not None and not bool(torch.isfinite(magnitude).all()):  # overflow: the scaler skips the step
            direction = torch.full((representation.numel() if units is not None else total.numel(),), float("nan"),
                                   dtype=total.dtype, device=total.device)
        else:
            generator = self.random.on(total.device)
            if units is None:
                direction = _kept_sum_in_place(total, magnitude, generator, self.leak)
            else:
                uniform = _draw_uniform(total.numel(), total, generator)
                positive_part, positive = _positive_side(total, magnitude, uniform)
                del positive_part, uniform
                direction = None
                for start, stop in bounds:
                    per_sample, signed = _signed_units(rows(start, stop), units)
                    part = _masked_sum(per_sample, signed, positive, self.leak)
                    del per_sample, signed
                    direction = part if direction is None else direction.add_(part)
            if factor is not None:
                direction = direction * factor.to(direction.dtype)
        if units is None:
            write_gradient(rows.shared, direction)
        else:
            representation.backward(direction.view_as(representation).to(representation.dtype))

    def get_extra_state(self) -> Any:
        return self.random.state()

    def set_extra_state(self, state: Any) -> None:
        self.random.load(state)
