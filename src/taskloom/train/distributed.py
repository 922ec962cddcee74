"""Data-parallel training: the one module that knows about process groups.

Started by ``torchrun`` (or ``taskloom train --nproc N``), every process builds the same model
from the same seed, takes its contiguous slice of each global batch, and the update equals
the one process would make with the whole batch. How (and why not ``DistributedDataParallel``):

* Explicit all-reduces, no DDP wrapper. DDP sums every gradient after ``backward``; gradient
  methods must combine the *global* per-task gradients first, so DDP would either be bypassed
  (they write ``.grad`` themselves) or reduce the trunk twice. One path for every method is
  easier to prove: the trainer sums the gradients of the parameters a balancer did not already
  reduce, in one flattened buffer per step (:meth:`Communicator.reduce_gradients`).
* Losses (:func:`global_task_losses`): a task's loss is the mean over its labelled units of the
  *global* batch, so each rank's share is its local sum divided by the global count (one
  all-reduce of the K local sums and K counts). The tensor a balancer sees has the value of the
  global loss (identical on every rank, so loss histories, uncertainty, DWA and FAMO state never
  diverge) and the gradient of the rank's share: by the chain rule the sum over ranks of the
  gradients of any function of the losses is the gradient of that function of the global losses.
  A balancer's own parameters (e.g. uncertainty's log-variances) get their whole gradient on
  every rank from the global values and are not reduced.
* Parameter-level gradient methods all-reduce the K x P matrix of per-task gradients of the
  shared parameters before combining it, and write the combined update to the trunk, which the
  trainer then leaves alone (:meth:`Balancer.reduced_parameters`); heads are reduced as usual.
* Representation-level methods: the rows of the per-task gradients of the representation are
  per sample, so the Gramian of the whole batch is the sum of the ranks' Gramians: one K x K
  all-reduce. Methods whose weights are a function of the Gramian (declared by
  ``weights_from_gram``) get the weights from it and each rank back-propagates its own rows of
  the combined direction; any other method is refused in that mode, naming it.
* Random methods draw from generators seeded identically on every rank (their ``seed``), and the
  trainer starts every rank from rank 0's state, so no rank-local state decides an update.
* Evaluation: every rank evaluates the whole split (the same numbers everywhere); only rank 0
  writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from taskloom.data.batch import Batch
from taskloom.losses import masked_loss_parts, tasks_by_name
from taskloom.task import Task

#: the environment ``torchrun`` sets in every process it starts
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Communicator:
    """This process's place in the group (``rank`` of ``world_size``) and the collectives training needs.

    ``bytes_reduced`` counts the bytes this rank passed to all-reduce (for benchmarks).
    """

    rank: int
    world_size: int
    bytes_reduced: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes the run directory, logs and checkpoints."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the ranks, in place (and returned); counted in ``bytes_reduced``."""
        self.bytes_reduced += tensor.numel() * tensor.element_size()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (pickled; for states and flags, not for tensors of a step)."""
        holder = [value if self.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def reduce_gradients(self, parameters: Sequence[Tensor]) -> None:
        """Sum the ``.grad`` of ``parameters`` over the ranks in one flattened all-reduce.

        A parameter whose gradient is None on every rank stays None (the optimizer then skips
        it, as it would in one process); one that has a gradient on any rank gets the sum.
        """
        parameters = list(parameters)
        if not parameters:
            return
        first = parameters[0]
        dtype = torch.promote_types(first.dtype, torch.float32)
        pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype) for p in parameters]
        present = torch.tensor([float(p.grad is not None) for p in parameters], dtype=dtype, device=first.device)
        flat = self.all_reduce_sum(torch.cat([*pieces, present]))
        offset = 0
        for p, has in zip(parameters, flat[-len(parameters):].tolist()):
            n = p.numel()
            if has > 0:
                p.grad = flat[offset:offset + n].view_as(p).to(p.dtype).clone()
            offset += n

    def barrier(self) -> None:
        dist.barrier()


def launched_by_torchrun() -> bool:
    """True when this process was started by torchrun with more than one process."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def backend_for(device: str | torch.device) -> str:
    """NCCL for CUDA devices, gloo otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def start(device: str | torch.device = "cpu", init_method: str | None = None, rank: int | None = None,
          world_size: int | None = None) -> Communicator:
    """Join the process group (from torchrun's environment unless ``init_method``/``rank``/``world_size`` say).

    The backend follows the device: NCCL on CUDA (each process on ``cuda:LOCAL_RANK``), gloo on CPU.
    """
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; train on one process")
    if init_method is None and not launched_by_torchrun():
        raise RuntimeError("no process group to join: start with `torchrun --nproc_per_node N -m taskloom train "
                           "CONFIG` or `taskloom train CONFIG --nproc N`")
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank or 0)))
    if not dist.is_initialized():
        options: dict[str, Any] = {"backend": backend_for(device), "timeout": timedelta(minutes=10)}
        if init_method is not None:
            options.update(init_method=init_method, rank=rank, world_size=world_size)
        dist.init_process_group(**options)
    return Communicator(dist.get_rank(), dist.get_world_size())


def active() -> Communicator | None:
    """The communicator of the process group this process belongs to (None when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Communicator(dist.get_rank(), dist.get_world_size())
    return None


def stop() -> None:
    """Leave the process group (a no-op when not in one).

    After a normal end, call :meth:`Communicator.barrier` first: gloo aborts a rank whose peer
    leaves while it is still connected.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave_process(code: int = 0) -> None:
    """End a data-parallel process now, after flushing its output, without running interpreter teardown.

    Workaround: on CPU (gloo), a process that finished training and left the group sometimes aborts
    during interpreter teardown ("terminate called without an active exception", about 1 run in 15
    here; not reproduced with plain collectives), which torchrun reports as a failed run.
    """
    import logging
    import sys

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os._exit(code)


def local_device(device: str | torch.device) -> torch.device:
    """``device`` for this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


# -- data ---------------------------------------------------------------------------------
def shard_bounds(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous slice ``[start, stop)`` of a batch of ``rows`` rows (sizes differ by at most 1)."""
    return rows * rank // world_size, rows * (rank + 1) // world_size


def _rows(value: Any, start: int, stop: int) -> Any:
    if isinstance(value, Tensor):
        return value[start:stop]
    if isinstance(value, dict):
        return {k: _rows(v, start, stop) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rows(v, start, stop) for v in value)
    raise TypeError(f"cannot shard a batch whose inputs hold a {type(value).__name__}; use tensors")


def shard_batch(batch: Batch, rank: int, world_size: int) -> Batch:
    """Rank ``rank``'s contiguous rows of ``batch`` (the ranks' slices, in order, are the batch)."""
    start, stop = shard_bounds(len(batch), rank, world_size)
    return Batch(_rows(batch.inputs, start, stop), _rows(batch.targets, start, stop),
                 _rows(batch.masks, start, stop), _rows(batch.weights, start, stop))


class ShardedLoader:
    """A loader of global batches (``BatchLoader``, ``MixedLoader``) seen by one rank: its slice of each batch.

    The global batches, their order and (for mixed sources) the mixing probabilities are the
    one-process ones, since every rank draws them from the same seed and epoch.
    """

    def __init__(self, loader: Any, communicator: Communicator) -> None:
        shard = getattr(loader, "shard", None)  # a loader that reads only this rank's rows (a streamed table)
        self.sliced = not callable(shard)
        self.loader = loader if self.sliced else shard(communicator.rank, communicator.world_size)
        self.communicator = communicator

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            yield shard_batch(batch, self.communicator.rank, self.communicator.world_size) if self.sliced else batch


# -- losses -------------------------------------------------------------------------------
class _GlobalValue(torch.autograd.Function):
    """The global loss's value, with the gradient of this rank's share (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, share: Tensor, value: Tensor) -> Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def loss_parts(outputs: Mapping[str, Tensor], batch: Batch, tasks: Mapping[str, Task],
               names: Sequence[str]) -> tuple[list[Tensor], list[Tensor]]:
    """Each named task's weighted loss sum and labelled count (weight sum) in ``batch``."""
    sums, counts = [], []
    for name in names:
        task, target = tasks[name], batch.targets[name]
        mask = task.kind_spec.unit_mask(batch.masks.get(name), target, batch.inputs)
        total, count = masked_loss_parts(task, outputs[name], target, mask, batch.weights.get(name))
        sums.append(total)
        counts.append(count)
    return sums, counts


def global_task_losses(outputs: Mapping[str, Tensor], batch: Batch, tasks: Mapping[str, Task] | Sequence[Task],
                       communicator: Communicator) -> dict[str, Tensor]:
    """Each task's loss over the global batch (value), differentiable as this rank's share of it.

    One all-reduce of the K local loss sums and K labelled counts; a task labelled on no rank is
    left out on every rank (as :func:`taskloom.losses.task_losses` leaves it out in one process).
    """
    by_name = tasks_by_name(tasks)
    names = list(by_name)
    sums, counts = loss_parts(outputs, batch, by_name, names)
    local = torch.stack([torch.stack([s.detach().float() for s in sums]), torch.stack([c.float() for c in counts])])
    reduced = communicator.all_reduce_sum(local.double() if local.device.type == "cpu" else local)
    global_sums, global_counts = reduced[0], reduced[1]
    present = (global_counts > 0).tolist()
    losses = {}
    for index, name in enumerate(names):
        if not present[index]:
            continue
        count = global_counts[index]
        share = sums[index] / count.to(sums[index].dtype)
        value = (global_sums[index] / count).to(share.dtype)
        losses[name] = _GlobalValue.apply(share, value)
    return losses

