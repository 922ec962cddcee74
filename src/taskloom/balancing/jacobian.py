"""The per-task gradient engine: a K x P matrix of the gradients of K losses, fast.

All gradient-level balancing methods get their per-task gradients here. With a shared
representation z the work is split in two: per-task gradients of z through each task's own
head (K small passes, never K x K head passes), then one pass through the trunk for all K
(vmapped with ``is_grads_batched`` on accelerators; K sequential passes on CPU, measured
faster there, and wherever vmap refuses the graph). Representation mode (Sener & Koltun
2018) stops after the first half and back-propagates one combined gradient of z.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass
class VmapFallback:
    """Whether the batched (vmapped) backward failed at one call site, so that it goes sequential from then on.

    Each :class:`~taskloom.balancing.gradient.GradientBalancer` owns one and passes it down:
    a graph that vmap cannot run in one model never turns batching off for another.
    """

    failed: bool = False
    reason: str = ""

    def record(self, error: BaseException, k: int) -> None:
        """Remember that vmap failed here (one log line) and why."""
        self.failed, self.reason = True, f"{type(error).__name__}: {error}"
        log.info("batched backward failed (%s); using %d sequential backward passes from now on", error, k)


def use_vmap(tensor: Tensor, k: int, batched: bool | None, fallback: VmapFallback | None) -> bool:
    """vmap where it pays (accelerators, launch-bound; on CPU K sequential passes measured faster) or when asked."""
    if fallback is not None and fallback.failed:
        return False
    if batched is None:
        return k > 1 and tensor.device.type != "cpu"
    return batched


def _flatten(grads: Sequence[Tensor | None], inputs: Sequence[Tensor], rows: int) -> Tensor:
    parts = []
    for grad, tensor in zip(grads, inputs):
        if grad is None:
            grad = tensor.new_zeros((rows, tensor.numel()))
        parts.append(grad.reshape(rows, -1))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def _flatten_into(out: Tensor, grads: Sequence[Tensor | None], inputs: Sequence[Tensor]) -> None:
    """Write one row's gradients, flattened and concatenated, into the row ``out`` (one copy, no temporary)."""
    parts = [tensor.new_zeros(tensor.numel()) if grad is None else grad.reshape(-1)
             for grad, tensor in zip(grads, inputs)]
    if len(parts) > 1:
        torch.cat(parts, out=out)
    else:
        out.copy_(parts[0])


def _sequential_rows(k: int, inputs: Sequence[Tensor]) -> Tensor:
    """The K x P matrix that K sequential backward passes fill row by row."""
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in inputs))
    return torch.empty((k, sum(t.numel() for t in inputs)), dtype=dtype, device=inputs[0].device)


def task_gradients(
    losses: Sequence[Tensor],
    inputs: Sequence[Tensor],
    batched: bool | None = None,
    retain_graph: bool = False,
    fallback: VmapFallback | None = None,
) -> Tensor:
    """The K x P matrix whose row k is the gradient of ``losses[k]`` w.r.t. ``inputs`` (flattened, concatenated).

    ``batched``: True asks for one vmapped backward, False for K sequential ones, None
    (default) batches on accelerators (on CPU the loop measured faster: the backward is
    matmul-bound there). Where vmap cannot run (some RNN, AMP or normalization graphs) it
    falls back to the loop, with one log line, and records it in ``fallback`` (the caller's
    own flag) so later calls there go sequential at once. Out-of-memory errors propagate.
    """
    inputs = list(inputs)
    k = len(losses)
    if k == 0:
        raise ValueError("task_gradients needs at least one loss")
    if not inputs:
        raise ValueError("task_gradients needs at least one input tensor (no shared parameters?)")
    if use_vmap(losses[0], k, batched, fallback):
        stacked = torch.stack([loss.reshape(()) for loss in losses])
        eye = torch.eye(k, dtype=stacked.dtype, device=stacked.device)
        try:
            grads = torch.autograd.grad(
                stacked, inputs, grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True
            )
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as error:
            (fallback or VmapFallback()).record(error, k)
        else:
            if not retain_graph:
                del stacked
            return _flatten(grads, inputs, k)
    rows = _sequential_rows(k, inputs)
    for index, loss in enumerate(losses):
        keep = retain_graph or index < k - 1
        _flatten_into(rows[index], torch.autograd.grad(loss, inputs, retain_graph=keep, allow_unused=True), inputs)
    return rows


def head_gradients(
    losses: Sequence[Tensor],
    representation: Tensor,
    task_parameters: Sequence[Sequence[Tensor]],
    batched: bool = False,
    fallback: VmapFallback | None = None,
) -> tuple[Tensor, list[tuple[Tensor | None, ...]]]:
    """Per-task gradients of the representation (K x |z|) and of each task's own parameters, from the heads only.

    Each loss reaches the representation through its own head, so K small backward passes
    (one per head, stopping at the representation) cost about one head backward each; a
    vmapped pass would run every head's backward K times. ``batched=True`` forces it anyway.
    """
    k = len(losses)
    if batched:
        rows = task_gradients(losses, [representation], batched=True, retain_graph=True, fallback=fallback)
        own = [torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True) if params else ()
               for loss, params in zip(losses, task_parameters)]
        return rows, own
    rows = representation.new_empty((k, representation.numel()))  # filled row by row: no stacked copy
    own = []
    for index in range(k):
        params = list(task_parameters[index])
        grads = torch.autograd.grad(losses[index], [representation, *params], retain_graph=True, allow_unused=True)
        if k == 1 and grads[0] is not None:
            return grads[0].reshape(1, -1), [grads[1:]]
        if grads[0] is None:
            rows[index].zero_()
        else:
            rows[index].copy_(grads[0].reshape(-1))
        own.append(grads[1:])
    return rows, own


def vmapped_grads(root: Tensor, inputs: Sequence[Tensor], cotangents: Tensor, batched: bool | None,
                  fallback: "VmapFallback | None") -> tuple[Tensor | None, ...] | None:
    """One vmapped vector-Jacobian product of ``root`` with K ``cotangents``, or None to go sequential.

    None where :func:`use_vmap` declines or vmap fails (the failure is recorded in ``fallback``).
    """
    k = cotangents.shape[0]
    if not use_vmap(root, k, batched, fallback):
        return None
    try:
        return torch.autograd.grad(root, list(inputs), grad_outputs=cotangents, is_grads_batched=True,
                                   retain_graph=True, allow_unused=True)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as error:
        (fallback or VmapFallback()).record(error, k)
        return None


def chain_gradients(
    representation: Tensor, inputs: Sequence[Tensor], rep_grads: Tensor, batched: bool | None = None,
    fallback: VmapFallback | None = None, retain_graph: bool = False,
) -> Tensor:
    """K x P gradients of ``inputs`` (the trunk's parameters) from K gradients of the representation.

    One vmapped vector-Jacobian product through the trunk on accelerators, K sequential
    ones on CPU (faster there), as an option (``batched``), or where vmap cannot run (recorded
    in ``fallback`` as in :func:`task_gradients`). ``retain_graph`` keeps the graph for a later pass.
    """
    inputs = list(inputs)
    k = rep_grads.shape[0]
    cotangents = rep_grads.reshape(k, *representation.shape).to(representation.dtype)
    grads = vmapped_grads(representation, inputs, cotangents, batched, fallback)
    if grads is not None:
        return _flatten(grads, inputs, k)
    rows = _sequential_rows(k, inputs)
    for index in range(k):
        grads = torch.autograd.grad(representation, inputs, grad_outputs=cotangents[index],
                                    retain_graph=retain_graph or index < k - 1, allow_unused=True)
        _flatten_into(rows[index], grads, inputs)
    return rows


def gram(grads: Tensor) -> Tensor:
    """The K x K matrix of inner products of the rows of ``grads`` (what most methods need)."""
    return grads @ grads.T


def write_gradient(parameters: Sequence[Tensor], flat: Tensor) -> None:
    """Add the P-vector ``flat``, split in the parameters' shapes, to their ``.grad``."""
    offset = 0
    for p in parameters:
        n = p.numel()
        piece = flat[offset : offset + n].view_as(p)
        offset += n
        if p.grad is None:
            p.grad = piece.detach().to(p.dtype)
        else:
            p.grad.add_(piece.to(p.grad.dtype))
    if offset != flat.numel():
        raise ValueError(f"the update has {flat.numel()} entries but the parameters have {offset}")


def write_gradients(parameters: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """Add each gradient to its parameter's ``.grad`` (None leaves the parameter alone)."""
    for p, g in zip(parameters, grads):
        if g is None:
            continue
        if p.grad is None:
            p.grad = g.detach()
        else:
            p.grad.add_(g)
