"""Gradient accumulation: one optimizer step from N micro-batches, equal to one step on them concatenated.

It is data parallelism across time instead of across ranks (see :mod:`taskloom.train.distributed`):

* Losses. A task's loss is its mean over the labelled units of the whole step, so each micro-batch's
  share is its local sum divided by the step's count. A no-grad forward over the micro-batches gives
  the step's K sums and counts first; every later forward of a micro-batch makes a tensor with the
  value of the step's loss and the gradient of the micro-batch's share, so the sum over micro-batches
  of the gradients of any function of the losses is its gradient on the whole step (chain rule).
* Loss-level methods are called once per step, on leaf tensors holding the step's K losses: their
  state (RLW's draw, DWA/FAMO histories, uncertainty's parameters) moves once, and the leaves'
  gradients are the coefficients ``c_k = d objective / d L_k``; then each micro-batch back-propagates
  ``sum_k c_k share_k``. FAMO's post-step losses are those of the whole step. GradNorm holds its
  weights fixed for the step, sums each micro-batch's K per-task gradients of its layer (K x |W|,
  one layer only) and updates the weights once from the norms of the sums and the step's losses.
* Gradient methods, parameter mode: the K x P per-task gradients of the shared parameters (and the
  heads' own gradients) are summed over the micro-batches; the method combines once per step.
* Data parallelism composes: each rank accumulates its slice of every micro-batch, and the reductions
  happen once per step (the K sums and counts, then the K x P matrix or the K x K Gramian; the trainer
  then sums the other gradients as without accumulation).
* Representation mode: the rows of the per-task gradients of the representation are per sample,
  so the step's Gramian is the sum of the micro-batches' K x K Gramians; the method's weights come
  from it once (methods whose weights are a function of the Gramian, ``weights_from_gram``; others
  are refused), then each micro-batch is run again and back-propagates its rows of the combined
  direction (a third forward; nothing but the K x K Gramian is kept between micro-batches).

Every forward of a micro-batch after the first draws the same random numbers (dropout masks) and
leaves the model's buffers (batch normalization's running statistics) as they were, so a
micro-batch updates them once. With batch normalization in training mode the statistics are those
of each micro-batch, not of the concatenation, so the equivalence holds for models without it.
Cost: one extra forward pass per micro-batch (two in representation mode); memory: one micro-batch's
activations, plus the K x P per-task gradients in parameter mode.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from taskloom.balancing import Balancer, GradientBalancer, LossWeighting
from taskloom.balancing.base import LossScale
from taskloom.balancing.gradnorm import GradNorm
from taskloom.balancing.jacobian import (
    chain_gradients, head_gradients, task_gradients, write_gradient, write_gradients,
)
from taskloom.data.batch import Batch
from taskloom.sharing.base import MultiTaskModule, unique
from taskloom.sharing.checkpointing import buffers_kept
from taskloom.task import Task
from taskloom.train.distributed import _GlobalValue, loss_parts


def check_accumulation(accumulate: int, balancer: Balancer) -> None:
    """Refuse, with the reason, a value of ``train.accumulate`` or a combination this module cannot make exact."""
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(f"train.accumulate must be a whole number >= 1 (micro-batches per optimizer step), "
                         f"got {accumulate!r}")
    if accumulate == 1:
        return
    if getattr(balancer, "auxiliary_names", None):  # taskloom.balancing.auxiliary_weighting
        raise ValueError("train.accumulate > 1 is not supported with weighted auxiliary tasks yet (an auxiliary "
                         "block or auxiliaries): their schedules and gates follow whole optimizer steps; set "
                         "train.accumulate: 1")
    if isinstance(balancer, GradNorm):
        return
    if isinstance(balancer, GradientBalancer):
        if getattr(balancer, "task_chunk", None) is not None:
            raise ValueError(
                f"train.accumulate > 1 is not supported with balancing.options.task_chunk yet "
                f"({type(balancer).__name__}): accumulation sums every task's gradient over the micro-batches, "
                "which the chunked engine avoids holding; set train.accumulate: 1 or remove task_chunk")
        if balancer.mode == "representation" and not balancer.weights_from_gram:
            raise ValueError(
                f"train.accumulate > 1 is not supported with {type(balancer).__name__} in representation mode: its "
                "update is not a function of the step's Gramian (all that is kept across micro-batches); use "
                "balancing.options.mode='parameters' or train.accumulate: 1")
        return
    if not isinstance(balancer, LossWeighting):
        raise ValueError(f"train.accumulate > 1 supports loss-weighting and gradient methods; "
                         f"{type(balancer).__name__} is neither: set train.accumulate: 1")


@dataclass
class MicroBatches:
    """The micro-batches of one step, the random state before each one's first forward, and the step's losses.

    ``names``: the tasks labelled somewhere in the step; ``counts`` and ``values``: their labelled counts
    (weights) and their losses over the whole step (same order).
    """

    batches: list[Batch]
    random_states: list[tuple[Tensor, list[Tensor]]]
    names: list[str]
    counts: list[Tensor]
    values: list[Tensor]

    @contextlib.contextmanager
    def replay(self, index: int, model: torch.nn.Module):
        """A later forward of micro-batch ``index``: the same random draws, the model's buffers left alone."""
        cpu, devices = self.random_states[index]
        torch.set_rng_state(cpu)
        if devices:
            torch.cuda.set_rng_state_all(devices)
        with buffers_kept([model]):
            yield

    def shares(self, outputs: Mapping[str, Tensor], index: int, tasks: Mapping[str, Task]) -> dict[str, Tensor]:
        """Each step task's loss: the step's value, differentiable as micro-batch ``index``'s share of it."""
        sums, _ = loss_parts(outputs, self.batches[index], tasks, self.names)
        return {name: _GlobalValue.apply(total / count.to(total.dtype), value.to(total.dtype))
                for name, total, count, value in zip(self.names, sums, self.counts, self.values)}


def _random_state(device: torch.device) -> tuple[Tensor, list[Tensor]]:
    devices = torch.cuda.get_rng_state_all() if device.type == "cuda" else []
    return torch.get_rng_state(), devices


def step_losses(batches: Sequence[Batch], forward: Callable[[Any], Mapping[str, Tensor]], tasks: Mapping[str, Task],
                device: torch.device, autocast: Callable[[], Any], communicator: Any = None) -> MicroBatches:
    """The first (no-grad) forward of every micro-batch: the step's labelled counts and losses per task
    (under data parallelism over every rank's micro-batches: one all-reduce of K sums and K counts per step)."""
    names = list(tasks)
    states, sums, counts = [], [], []
    with torch.no_grad():
        for batch in batches:
            states.append(_random_state(device))
            with autocast():
                local_sums, local_counts = loss_parts(forward(batch.inputs), batch, tasks, names)
            sums.append(torch.stack([s.float() for s in local_sums]))
            counts.append(torch.stack([c.float() for c in local_counts]))
    total_sums, total_counts = torch.stack(sums).sum(0), torch.stack(counts).sum(0)
    if communicator is not None:
        local = torch.stack([total_sums, total_counts])
        reduced = communicator.all_reduce_sum(local.double() if local.device.type == "cpu" else local)
        total_sums, total_counts = reduced[0].to(total_sums.dtype), reduced[1].to(total_counts.dtype)
    present = (total_counts > 0).tolist()
    kept = [k for k, here in enumerate(present) if here]
    return MicroBatches(list(batches), states, [names[k] for k in kept], [total_counts[k] for k in kept],
                        [total_sums[k] / total_counts[k] for k in kept])


def accumulated_backward(step: MicroBatches, model: MultiTaskModule, balancer: Balancer, tasks: Mapping[str, Task],
                         forward: Callable[[Any], Mapping[str, Tensor]], autocast: Callable[[], Any],
                         scale: LossScale | None = None) -> None:
    """The ``.grad`` of one step on the concatenated micro-batches (see the module docstring)."""
    if not step.names:
        return
    if isinstance(balancer, GradientBalancer):
        if balancer.mode == "representation":
            _representation_backward(step, model, balancer, tasks, autocast, scale)
        else:
            _parameter_backward(step, model, balancer, tasks, autocast, scale)
        return
    if isinstance(balancer, GradNorm):
        _gradnorm_backward(step, model, balancer, tasks, forward, autocast, scale)
        return
    leaves = {name: value.detach().clone().requires_grad_(True) for name, value in zip(step.names, step.values)}
    if scale is None:  # one call per step: the method's state moves once
        balancer.backward(leaves, model)
    else:
        balancer.backward(leaves, model, scale=scale)
    coefficients = [leaf.grad.detach() if leaf.grad is not None else None for leaf in leaves.values()]
    for index in range(len(step.batches)):
        with step.replay(index, model), autocast():
            shares = step.shares(forward(step.batches[index].inputs), index, tasks)
            terms = [c.to(s.dtype) * s for c, s in zip(coefficients, shares.values()) if c is not None]
        if terms:
            torch.stack([t.reshape(()) for t in terms]).sum().backward()


def _gradnorm_backward(step: MicroBatches, model: MultiTaskModule, balancer: GradNorm, tasks: Mapping[str, Task],
                       forward: Callable[[Any], Mapping[str, Tensor]], autocast: Callable[[], Any],
                       scale: LossScale | None) -> None:
    """GradNorm on the whole step: its weights fixed, the per-task gradients of its layer summed, one update."""
    names = [name for name in balancer.task_names if name in step.names]
    index, weights = balancer.step_weights(names)
    layer = balancer._layer_parameters(model)
    summed: Tensor | None = None
    for micro in range(len(step.batches)):
        with step.replay(micro, model), autocast():
            shares = step.shares(forward(step.batches[micro].inputs), micro, tasks)
            stacked = torch.stack([shares[name].reshape(()) for name in names])
            total = (weights.to(stacked.dtype) * stacked).sum()
        scaled = stacked if scale is None else scale(stacked)
        rows = task_gradients(list(scaled.unbind()), layer, batched=False, retain_graph=True)
        summed = rows if summed is None else summed + rows
        (total if scale is None else scale(total)).backward()
    if balancer.communicator is not None:  # the ranks' layer gradients are the step's other rows
        summed = balancer.communicator.all_reduce_sum(summed)
    norms = summed.norm(dim=1).to(weights.dtype)
    if scale is not None:
        norms = norms / scale(torch.ones((), device=norms.device)).to(weights.dtype)
        if not bool(torch.isfinite(norms).all()):  # overflow: the scaler skips the step, the weights stay
            return
    values = torch.stack([step.values[step.names.index(name)] for name in names])
    balancer.update_weights(index, weights, values.detach(), norms)


def _objectives(step: MicroBatches, balancer: GradientBalancer, shares: Mapping[str, Tensor],
                scale: LossScale | None) -> list[Tensor]:
    values = balancer.transform_losses([shares[n] for n in step.names])
    return values if scale is None else [scale(v) for v in values]


def _outputs(model: MultiTaskModule, inputs: Any) -> tuple[Tensor | None, Mapping[str, Tensor]]:
    if not getattr(model, "has_representation", False):
        return None, model(inputs)
    representation = model.representation(inputs)
    return representation, model.heads_forward(representation)


def _parameter_backward(step: MicroBatches, model: MultiTaskModule, balancer: GradientBalancer,
                        tasks: Mapping[str, Task], autocast: Callable[[], Any], scale: LossScale | None) -> None:
    """Per-task gradients of the shared parameters summed over the micro-batches, combined once."""
    shared = model.shared_parameters()
    summed: Tensor | None = None
    for index in range(len(step.batches)):
        with step.replay(index, model), autocast():
            representation, outputs = _outputs(model, step.batches[index].inputs)
            objectives = _objectives(step, balancer, step.shares(outputs, index, tasks), scale)
        if representation is not None:
            own = [model.task_parameters(n) for n in step.names]
            rep_grads, head_grads = head_gradients(objectives, representation, own)
            for params, grads in zip(own, head_grads):
                write_gradients(params, grads)
            if not shared:
                continue
            grads = chain_gradients(representation, shared, rep_grads, batched=balancer.batched,
                                    fallback=balancer.vmap_fallback)
        else:
            heads = unique(p for n in step.names for p in model.task_parameters(n))
            if heads:
                total = torch.stack([v.reshape(()) for v in objectives]).sum()
                write_gradients(heads, torch.autograd.grad(total, heads, retain_graph=bool(shared),
                                                           allow_unused=True))
            if not shared:
                continue
            grads = task_gradients(objectives, shared, batched=balancer.batched, fallback=balancer.vmap_fallback)
        summed = grads if summed is None else summed + grads
    if summed is not None:  # under data parallelism the ranks' sums are added once per step
        summed = balancer._global_task_gradients(summed)
        write_gradient(shared, balancer._scaled_combine(summed, step.names, _factor(summed, scale)))


def _factor(like: Tensor, scale: LossScale | None) -> Tensor | None:
    return None if scale is None else scale(torch.ones((), device=like.device))


def _representation_backward(step: MicroBatches, model: MultiTaskModule, balancer: GradientBalancer,
                             tasks: Mapping[str, Task], autocast: Callable[[], Any], scale: LossScale | None) -> None:
    """The step's Gramian summed over the micro-batches, the method's weights once, then each micro-batch's
    rows of the combined direction back-propagated through the trunk."""
    balancer._check_representation(model)
    gramian: Tensor | None = None
    factor: Tensor | None = None
    for index in range(len(step.batches)):
        with step.replay(index, model), autocast():
            representation, outputs = _outputs(model, step.batches[index].inputs)
            objectives = _objectives(step, balancer, step.shares(outputs, index, tasks), scale)
        own = [model.task_parameters(n) for n in step.names]
        rep_grads, head_grads = head_gradients(objectives, representation, own)
        for params, grads in zip(own, head_grads):
            write_gradients(params, grads)
        rows = rep_grads.double()
        factor = _factor(rows, scale)
        if factor is not None:
            rows = rows / factor.double()
        local = rows @ rows.T
        gramian = local if gramian is None else gramian + local
    if balancer.communicator is not None:  # the ranks' rows are the step's other samples: one K x K all-reduce
        balancer.check_data_parallel()
        gramian = balancer.communicator.all_reduce_sum(gramian)
    if factor is not None and not bool(torch.isfinite(gramian).all()):
        weights = torch.ones(len(step.names), dtype=torch.float64, device=gramian.device)  # overflow: skipped
    else:
        eigenvalues, eigenvectors = torch.linalg.eigh(gramian)
        root = eigenvectors * eigenvalues.clamp_min(0).sqrt()
        _, weights = balancer.combine(root.float(), step.names)
        if weights is None:
            raise ValueError(f"{type(balancer).__name__} returned no task weights; it cannot accumulate "
                             "micro-batches in representation mode")
        balancer._weights = (list(step.names), weights.detach())
    for index in range(len(step.batches)):
        with step.replay(index, model), autocast():
            representation, outputs = _outputs(model, step.batches[index].inputs)
            objectives = _objectives(step, balancer, step.shares(outputs, index, tasks), scale)
        rep_grads, _ = head_gradients(objectives, representation, [[] for _ in step.names])
        direction = weights.to(rep_grads.dtype) @ rep_grads
        representation.backward(direction.view_as(representation).to(representation.dtype))


def step_values(step: MicroBatches) -> dict[str, Tensor]:
    """The step's loss per labelled task (for logging and the divergence check)."""
    return dict(zip(step.names, step.values))
