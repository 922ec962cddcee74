"""The task-chunked Gramian engine: gradient methods with many tasks in O(B x P) memory, exactly.

The full engine holds the K x P matrix of per-task gradients (K x |z| in representation
mode). Most methods need only its K x K Gramian G = J J^T: their update is ``w @ J`` with w a
function of G (and of the method's state), which is the gradient of ``sum_k w_k L_k``. So this
engine computes G holding at most two chunks of ``task_chunk`` = B rows: chunk I is held while
each later chunk J is recomputed, its block G[I, J] = J_I J_J^T kept and the rows dropped. Where
it can (one process on the sequential path, and always in representation mode) chunk J comes
one task at a time, so B + 1 rows at most are alive. Then the method gets the weights from a
K x K factor R of G (R R^T = G: same Gramian, same weights), and one weighted backward pass of
``sum_k w_k L_k`` writes the shared update. Each head gets its own task's gradient the first time
the task's row is computed. Nothing is approximated; the price is recomputation: with
C = ceil(K / B) chunks the Gramian takes C (C + 1) / 2 chunk passes, about K (C + 1) / 2
per-task backward passes (K at C = 1), plus the weighted one.

Data parallelism (see :mod:`taskloom.train.distributed`): in representation mode the rows are
per sample, so the global Gramian is the sum of the ranks' ones (one K x K all-reduce); in
parameter mode each chunk's rows are summed over the ranks before their products (recomputed
chunks again: C (C + 1) / 2 x B x P values all-reduced, against K x P for the full engine).
Either way the weighted backward is local and the trainer sums the trunk's gradients like any
other parameter's (:meth:`GradientBalancer.reduced_parameters` returns none).
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from taskloom.balancing.jacobian import (
    VmapFallback,
    chain_gradients,
    head_gradients,
    task_gradients,
    use_vmap,
    write_gradients,
)
from taskloom.sharing.base import MultiTaskModule, unique

log = logging.getLogger(__name__)


def check_task_chunk(task_chunk: Any, method: str) -> int | None:
    """``task_chunk`` as an int >= 1 or None, else a ValueError that names the option and the method."""
    if task_chunk is None:
        return None
    if isinstance(task_chunk, bool) or not isinstance(task_chunk, int) or task_chunk < 1:
        raise ValueError(f"balancing.options.task_chunk of {method} must be a whole number >= 1 (tasks whose "
                         f"gradients are held at once) or null for the full engine, got {task_chunk!r}")
    return task_chunk


def chunk_bounds(k: int, size: int) -> list[tuple[int, int]]:
    """The [start, stop) ranges of ``k`` tasks in chunks of ``size`` (the last one may be shorter)."""
    return [(start, min(start + size, k)) for start in range(0, k, size)]


def gramian_passes(k: int, size: int) -> int:
    """Chunk computations the Gramian takes for ``k`` tasks in chunks of ``size``: C (C + 1) / 2."""
    chunks = math.ceil(k / size)
    return chunks * (chunks + 1) // 2


@dataclass
class TaskRows:
    """Per-task gradient rows of a range of tasks, computed on demand (what the chunked engine holds).

    Parameter mode: gradients of the ``shared`` parameters (through the representation when there
    is one, else directly from the losses); representation mode (``shared`` empty): gradients of
    the representation. Rows come back unscaled (divided by ``factor`` under fp16), in at least
    float32, and under data parallelism in parameter mode summed over the ranks (the global rows).
    The first computation of a task also writes its head's own gradient.
    """

    values: Sequence[Tensor]
    model: MultiTaskModule
    names: Sequence[str]
    representation: Tensor | None
    shared: Sequence[Tensor]
    factor: Tensor | None = None
    communicator: Any = None
    batched: bool | None = None
    fallback: VmapFallback | None = None
    heads_done: set[int] = field(default_factory=set)

    def __call__(self, start: int, stop: int) -> Tensor:
        return chunk_rows(self, start, stop)

    def streams(self, k: int) -> bool:
        """True when ``k`` rows of shared parameters can come one task at a time, as per-parameter pieces.

        That is the sequential path (not vmapped) of one process: data parallelism all-reduces whole rows.
        """
        tensor = self.representation if self.representation is not None else self.values[0]
        return bool(self.shared) and self.communicator is None and not use_vmap(tensor, k, self.batched,
                                                                                 self.fallback)

    def products(self, held: Tensor, start: int, stop: int) -> Tensor:
        """``held @ rows(start, stop).T``, one task's row at a time where it can (never the whole chunk J).

        Representation mode always (a task's gradient of z comes from its head alone); parameter
        mode where :meth:`streams` (else the chunk's rows are built, all-reduced, multiplied).
        """
        if not self.shared:
            return torch.stack([held @ chunk_rows(self, index, index + 1)[0] for index in range(start, stop)], dim=1)
        if self.streams(stop - start):
            return streamed_products(self, held, start, stop)
        return held @ chunk_rows(self, start, stop).T

    @property
    def dtype(self) -> torch.dtype:
        """The rows' dtype: that of the shared parameters (or representation), at least float32."""
        tensors = self.shared or [self.representation]
        return functools.reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)


def _write_own_head(rows: TaskRows, index: int) -> list[Tensor]:
    """Task ``index``'s own parameters if its head has no gradient yet this step (else none), marked done."""
    if index in rows.heads_done:
        return []
    rows.heads_done.add(index)
    return list(rows.model.task_parameters(rows.names[index]))


def task_pieces(rows: TaskRows, index: int) -> tuple[Tensor | None, ...]:
    """Task ``index``'s gradient of each shared parameter, unflattened (and its head's, the first time)."""
    return _pieces(rows, index)


def _pieces(rows: TaskRows, index: int) -> tuple[Tensor | None, ...]:
    """:func:`task_pieces` (which tests may wrap; the engine's own chunk filling calls this one).

    One backward pass from the loss (through the head and the trunk), so the representation's
    gradient is an intermediate the engine frees on the way, not a held cotangent.
    """
    if rows.representation is None:
        return torch.autograd.grad(rows.values[index], list(rows.shared), retain_graph=True, allow_unused=True)
    own = _write_own_head(rows, index)
    grads = torch.autograd.grad(rows.values[index], [*rows.shared, *own], retain_graph=True, allow_unused=True)
    write_gradients(own, grads[len(rows.shared):])
    return grads[:len(rows.shared)]


def streamed_products(rows: TaskRows, held: Tensor, start: int, stop: int) -> Tensor:
    """``held @ rows(start, stop).T`` one task at a time, from its per-parameter gradients (never one flat row)."""
    return torch.stack([_dot_pieces(held, task_pieces(rows, index), rows.shared, rows.factor)
                        for index in range(start, stop)], dim=1)


def flat_pieces(pieces: Sequence[Tensor | None], shared: Sequence[Tensor], dtype: torch.dtype,
                factor: Tensor | None):
    """(offset, flattened piece) for each parameter's piece of one task's row, unscaled; None pieces skipped."""
    offset = 0
    for piece, parameter in zip(pieces, shared):
        if piece is not None:
            flat = piece.reshape(-1).to(dtype)
            yield offset, flat if factor is None else flat / factor.to(dtype)
        offset += parameter.numel()


def _dot_pieces(held: Tensor, pieces: Sequence[Tensor | None], shared: Sequence[Tensor],
                factor: Tensor | None) -> Tensor:
    """``held @ row`` for the row whose per-parameter pieces are ``pieces`` (divided by ``factor``)."""
    column = held.new_zeros(held.shape[0])
    for offset, flat in flat_pieces(pieces, shared, held.dtype, factor):
        column += held[:, offset:offset + flat.numel()] @ flat
    return column


def chunk_rows(rows: TaskRows, start: int, stop: int) -> Tensor:
    """The (stop - start) x P rows of tasks ``start:stop`` (see :class:`TaskRows`)."""
    if rows.streams(stop - start):
        return _filled_rows(rows, start, stop)
    values = list(rows.values[start:stop])
    if rows.representation is not None:
        own = [_write_own_head(rows, index) for index in range(start, stop)]
        rep_grads, head_grads = head_gradients(values, rows.representation, own)
        for params, grads in zip(own, head_grads):
            write_gradients(params, grads)
        if rows.shared:
            block = chain_gradients(rows.representation, rows.shared, rep_grads, batched=rows.batched,
                                    fallback=rows.fallback, retain_graph=True)
            del rep_grads
        else:
            block = rep_grads
    else:
        block = task_gradients(values, rows.shared, batched=rows.batched, retain_graph=True, fallback=rows.fallback)
    if block.dtype in (torch.float16, torch.bfloat16):
        block = block.float()
    if rows.communicator is not None and rows.shared:
        block = rows.communicator.all_reduce_sum(block.contiguous())
    if rows.factor is not None:
        block = block / rows.factor.to(block.dtype)
    return block


def _filled_rows(rows: TaskRows, start: int, stop: int) -> Tensor:
    """Rows filled one task at a time from its per-parameter pieces, unscaled (no cotangent, no flat copy)."""
    size = sum(p.numel() for p in rows.shared)
    block = torch.zeros((stop - start, size), dtype=rows.dtype, device=rows.shared[0].device)
    for row, index in enumerate(range(start, stop)):
        for offset, flat in flat_pieces(_pieces(rows, index), rows.shared, rows.dtype, rows.factor):
            block[row, offset:offset + flat.numel()] = flat
    return block


def write_plain_heads(values: Sequence[Tensor], model: MultiTaskModule, names: Sequence[str]) -> None:
    """Without a representation, every head's own gradient from one backward of the summed objectives."""
    heads = unique(p for n in names for p in model.task_parameters(n))
    if heads:
        total = values[0] if len(values) == 1 else torch.stack([v.reshape(()) for v in values]).sum()
        write_gradients(heads, torch.autograd.grad(total, heads, retain_graph=True, allow_unused=True))


def chunked_gramian(rows: Callable[[int, int], Tensor], k: int, size: int,
                    products: Callable[[Tensor, int, int], Tensor] | None = None) -> Tensor:
    """The K x K Gramian (float64) of the rows ``rows(start, stop)`` returns, holding at most two chunks.

    Chunk I is computed once as the held chunk, then each later chunk J is recomputed for the
    block G[I, J]: C (C + 1) / 2 chunk computations for C chunks (:func:`gramian_passes`).
    ``products(held, start, stop)``, when given, returns ``held @ rows(start, stop).T`` its own
    way (:meth:`TaskRows.products` streams the rows of J, so only chunk I is ever held whole).
    """
    bounds = chunk_bounds(k, size)
    gramian: Tensor | None = None
    for position, (a0, a1) in enumerate(bounds):
        held = rows(a0, a1)
        if gramian is None:
            gramian = torch.zeros((k, k), dtype=torch.float64, device=held.device)
        gramian[a0:a1, a0:a1] = (held @ held.T).double()
        for b0, b1 in bounds[position + 1:]:
            if products is not None:
                block = products(held, b0, b1).double()
            else:
                other = rows(b0, b1)
                block = (held @ other.T).double()
                del other  # before the next chunk is computed: never more than two chunks alive
            gramian[a0:a1, b0:b1] = block
            gramian[b0:b1, a0:a1] = block.T
        del held
    return gramian


def gramian_factor(gramian: Tensor, dtype: torch.dtype) -> Tensor:
    """A K x K matrix R with R R^T = ``gramian`` (from its eigendecomposition; negative rounding clipped)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(gramian)
    return (eigenvectors * eigenvalues.clamp_min(0).sqrt()).to(dtype)


def weighted_backward(values: Sequence[Tensor], weights: Tensor, representation: Tensor | None,
                      shared: Sequence[Tensor]) -> None:
    """Back-propagate ``sum_k w_k values_k`` to the shared part only (heads already have their gradients).

    Representation mode (``shared`` empty): through the representation, as the full engine does;
    parameter mode: into the shared parameters' ``.grad`` (zeros for one the objectives do not reach).
    """
    weights = weights.detach()
    total = sum(w.to(v.dtype) * v.reshape(()) for w, v in zip(weights.unbind(), values))
    if not shared:
        (direction,) = torch.autograd.grad(total, representation)
        representation.backward(direction)
        return
    grads = torch.autograd.grad(total, list(shared), allow_unused=True)
    write_gradients(list(shared), [torch.zeros_like(p) if g is None else g for p, g in zip(shared, grads)])


def task_rows(balancer: Any, values: Sequence[Tensor], names: Sequence[str], model: MultiTaskModule,
              representation: Tensor | None, factor: Tensor | None) -> TaskRows | None:
    """The row source of one step of ``balancer`` (a GradientBalancer); without a representation, heads first.

    None when there is nothing shared to update (parameter mode, no shared parameters): the heads are done.
    """
    shared = list(model.shared_parameters()) if balancer.mode == "parameters" else []
    if representation is None or (balancer.mode == "parameters" and not shared):
        write_plain_heads(values, model, names)
        if not shared:
            return None
    return TaskRows(values, model, names, representation, shared, factor=factor,
                    communicator=balancer.communicator, batched=balancer.batched, fallback=balancer.vmap_fallback)


def gramian_backward(balancer: Any, values: Sequence[Tensor], names: Sequence[str], model: MultiTaskModule,
                     representation: Tensor | None, factor: Tensor | None) -> None:
    """One step of a method whose weights are a function of the Gramian, in chunks of ``balancer.task_chunk``.

    The Gramian of the unscaled rows; under data parallelism the global one (parameter mode:
    from rows summed over the ranks; representation mode: the sum of the ranks' Gramians, one
    K x K all-reduce). A non-finite Gramian (an fp16 overflow) leaves the method's state alone
    and makes the update NaN, so the loss scaler skips the step. The weighted backward is local:
    under data parallelism the trainer sums the trunk's gradients like any other parameter's.
    """
    rows = task_rows(balancer, values, names, model, representation, factor)
    if rows is None:
        return
    gramian = chunked_gramian(rows, len(values), balancer.task_chunk, rows.products)
    if balancer.communicator is not None and not rows.shared:
        balancer.check_data_parallel()
        gramian = balancer.communicator.all_reduce_sum(gramian)
    weights = gramian_weights(balancer, values, names, gramian, factor)
    weighted_backward(values, weights, representation, rows.shared)


def gramian_weights(balancer: Any, values: Sequence[Tensor], names: Sequence[str], gramian: Tensor,
                    factor: Tensor | None) -> Tensor:
    """The method's task weights from the K x K ``gramian`` of the unscaled rows (kept for :meth:`last_weights`).

    Shared by the chunked engine and the layer Gramian engine (:mod:`~taskloom.balancing.layer_gramian`).
    A non-finite Gramian under a loss scale gives NaN weights (the scaler skips the step).
    """
    dtype = torch.promote_types(values[0].dtype, torch.float32)
    if factor is not None and not bool(torch.isfinite(gramian).all()):
        return torch.full((len(values),), float("nan"), dtype=dtype, device=gramian.device)
    _, weights = balancer.combine(gramian_factor(gramian, dtype), names)
    if weights is None:
        raise ValueError(f"{type(balancer).__name__} returned no task weights; it cannot use a Gramian "
                         "engine (balancing.options.task_chunk or engine: gramian)")
    balancer._weights = (list(names), weights.detach())
    return weights
