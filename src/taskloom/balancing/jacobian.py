"""The per-task gradient engine: a K x P matrix of the gradients of K losses, fast.

All gradient-level balancing methods get their per-task gradients here. With a shared
representation z the work is split in two: per-task gradients of z through each task's own
head (K small passes, never K x K head passes), then one pass through the trunk for all K
(vmapped with ``is_grads_batched`` on accelerators; K sequential passes on CPU, measured
faster there, and wherever vmap refuses the graph). Representation mode (Sener & Koltun
2018) stops after the first half and back-propagates one combined gradient of z.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: graphs (by the type of error) on which vmap failed once: we go sequential straight away afterwards
_VMAP_FAILED: set[str] = set()


def _batched_by_default(tensor: Tensor, k: int) -> bool:
    """vmap where it pays: on accelerators (launch-bound); on CPU, K sequential passes measured faster."""
    return k > 1 and tensor.device.type != "cpu" and "vmap" not in _VMAP_FAILED


def _flatten(grads: Sequence[Tensor | None], inputs: Sequence[Tensor], rows: int) -> Tensor:
    parts = []
    for grad, tensor in zip(grads, inputs):
        if grad is None:
            grad = tensor.new_zeros((rows, tensor.numel()))
        parts.append(grad.reshape(rows, -1))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def task_gradients(
    losses: Sequence[Tensor],
    inputs: Sequence[Tensor],
    batched: bool | None = None,
    retain_graph: bool = False,
) -> Tensor:
    """The K x P matrix whose row k is the gradient of ``losses[k]`` w.r.t. ``inputs`` (flattened, concatenated).

    ``batched``: True forces one vmapped backward, False forces K sequential ones, None
    (default) batches on accelerators (on CPU the loop measured faster: the backward is
    matmul-bound there) and falls back to the loop, with one log line, where vmap cannot run
    (some RNN, AMP or normalization graphs).
    """
    inputs = list(inputs)
    k = len(losses)
    if k == 0:
        raise ValueError("task_gradients needs at least one loss")
    if not inputs:
        raise ValueError("task_gradients needs at least one input tensor (no shared parameters?)")
    if batched is None:
        batched = _batched_by_default(losses[0], k)
    if batched:
        stacked = torch.stack([loss.reshape(()) for loss in losses])
        eye = torch.eye(k, dtype=stacked.dtype, device=stacked.device)
        try:
            grads = torch.autograd.grad(
                stacked, inputs, grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True
            )
        except RuntimeError as error:
            _VMAP_FAILED.add("vmap")
            log.info("batched backward failed (%s); using %d sequential backward passes from now on", error, k)
        else:
            if not retain_graph:
                del stacked
            return _flatten(grads, inputs, k)
    rows = []
    for index, loss in enumerate(losses):
        keep = retain_graph or index < k - 1
        grads = torch.autograd.grad(loss, inputs, retain_graph=keep, allow_unused=True)
        rows.append(_flatten(grads, inputs, 1))
    return torch.cat(rows, dim=0)


def head_gradients(
    losses: Sequence[Tensor],
    representation: Tensor,
    task_parameters: Sequence[Sequence[Tensor]],
    batched: bool = False,
) -> tuple[Tensor, list[tuple[Tensor | None, ...]]]:
    """Per-task gradients of the representation (K x |z|) and of each task's own parameters, from the heads only.

    Each loss reaches the representation through its own head, so K small backward passes
    (one per head, stopping at the representation) cost about one head backward each; a
    vmapped pass would run every head's backward K times. ``batched=True`` forces it anyway.
    """
    k = len(losses)
    if batched:
        rows = task_gradients(losses, [representation], batched=True, retain_graph=True)
        own = [torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True) if params else ()
               for loss, params in zip(losses, task_parameters)]
        return rows, own
    rows, own = [], []
    for index in range(k):
        params = list(task_parameters[index])
        grads = torch.autograd.grad(losses[index], [representation, *params], retain_graph=True, allow_unused=True)
        first = grads[0] if grads[0] is not None else torch.zeros_like(representation)
        rows.append(first.reshape(-1))
        own.append(grads[1:])
    return torch.stack(rows), own


def chain_gradients(
    representation: Tensor, inputs: Sequence[Tensor], rep_grads: Tensor, batched: bool | None = None
) -> Tensor:
    """K x P gradients of ``inputs`` (the trunk's parameters) from K gradients of the representation.

    One vmapped vector-Jacobian product through the trunk on accelerators, K sequential
    ones on CPU (faster there), as an option (``batched``), or where vmap cannot run.
    """
    inputs = list(inputs)
    k = rep_grads.shape[0]
    cotangents = rep_grads.reshape(k, *representation.shape).to(representation.dtype)
    if batched is None:
        batched = _batched_by_default(representation, k)
    if batched:
        try:
            grads = torch.autograd.grad(representation, inputs, grad_outputs=cotangents, is_grads_batched=True,
                                        retain_graph=True, allow_unused=True)
        except RuntimeError as error:
            _VMAP_FAILED.add("vmap")
            log.info("batched backward failed (%s); using %d sequential backward passes from now on", error, k)
        else:
            return _flatten(grads, inputs, k)
    rows = []
    for index in range(k):
        grads = torch.autograd.grad(representation, inputs, grad_outputs=cotangents[index],
                                    retain_graph=index < k - 1, allow_unused=True)
        rows.append(_flatten(grads, inputs, 1))
    return torch.cat(rows, dim=0)


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
