"""Inter-task affinity by lookahead (Fifty et al. 2021, "Efficiently identifying task groupings", TAG).

Z[i->j] = 1 - L_j(theta_s - lr * grad_s L_i) / L_j(theta_s): how much a step on task i's
gradient of the shared parameters lowers task j's loss on the same batch. Positive: i helps j.
The lookahead is a plain SGD step with the optimizer's learning rate, as in Fifty et al.
2021, whatever optimizer trains the model (no momentum or Adam scaling): every task gets the
same kind of step, so the affinities compare tasks, not optimizer states.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from taskloom.data.batch import Batch
from taskloom.evaluate.conflict import PairwiseMean
from taskloom.losses import task_losses
from taskloom.sharing.base import MultiTaskModule
from taskloom.task import Task


def _task_map(tasks: Sequence[Task] | Mapping[str, Task]) -> dict[str, Task]:
    return dict(tasks) if isinstance(tasks, Mapping) else {t.name: t for t in tasks}


@contextlib.contextmanager
def _frozen_state(model: MultiTaskModule) -> Iterator[Callable[[], None]]:
    """Restore the model's buffers and the RNG states on exit; yield a function that rewinds the RNG.

    Rewinding before every forward pass gives each lookahead the same dropout masks, so the
    loss ratios measure the step and not the noise.
    """
    devices = sorted({b.device.index or 0 for b in list(model.parameters()) + list(model.buffers())
                      if b.device.type == "cuda"})
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    with torch.random.fork_rng(devices=devices):
        cpu_state = torch.get_rng_state()
        cuda_states = [torch.cuda.get_rng_state(d) for d in devices]

        def rewind() -> None:
            torch.set_rng_state(cpu_state)
            for device, state in zip(devices, cuda_states):
                torch.cuda.set_rng_state(state, device)

        try:
            yield rewind
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])


def lookahead_affinity(
    model: MultiTaskModule,
    batch: Batch,
    tasks: Sequence[Task] | Mapping[str, Task],
    lr: float,
) -> dict[str, dict[str, float]]:
    """``{i: {j: Z[i->j]}}`` for the tasks labelled in ``batch``, from one SGD lookahead per task.

    ``lr`` should be the optimizer's learning rate (``optimizer.param_groups[0]["lr"]``).
    The shared parameters, buffers and RNG states are restored exactly; ``.grad`` is never
    touched. A task whose loss before the step is 0 gets NaN affinities onto it (undefined).
    """
    if lr <= 0:
        raise ValueError(f"lr must be positive (the optimizer's learning rate), got {lr}")
    task_map = _task_map(tasks)
    shared = list(model.shared_parameters())
    if not shared:
        raise ValueError(f"{type(model).__name__} has no shared parameters; lookahead affinity needs some")
    saved = [p.detach().clone() for p in shared]
    with _frozen_state(model) as rewind:
        rewind()
        before = task_losses(model(batch.inputs), batch, task_map)
        names = list(before)
        grads = {
            name: torch.autograd.grad(before[name], shared, retain_graph=k < len(names) - 1, allow_unused=True)
            for k, name in enumerate(names)
        }
        base = {name: float(loss.detach()) for name, loss in before.items()}
        del before
        result: dict[str, dict[str, float]] = {}
        try:
            with torch.no_grad():
                for i in names:
                    for p, g in zip(shared, grads[i]):
                        if g is not None:
                            p.sub_(g, alpha=lr)
                    rewind()
                    after = task_losses(model(batch.inputs), batch, task_map)
                    result[i] = {
                        j: (1.0 - float(after[j]) / base[j]) if base[j] != 0 else math.nan for j in names
                    }
                    for p, s in zip(shared, saved):
                        p.copy_(s)
        finally:
            with torch.no_grad():
                for p, s in zip(shared, saved):
                    p.copy_(s)
    return result


class AffinityTracker(PairwiseMean):
    """Mean lookahead affinity per epoch, ``{i: {j: Z[i->j]}}`` keyed by task names (Fifty et al. 2021).

    Call :meth:`measure` every N training steps and :meth:`on_epoch_end` once per epoch.
    """

    def measure(
        self,
        model: MultiTaskModule,
        batch: Batch,
        tasks: Sequence[Task] | Mapping[str, Task],
        lr: float,
    ) -> dict[str, dict[str, float]]:
        matrix = lookahead_affinity(model, batch, tasks, lr)
        self.add(matrix)
        return matrix

    def matrix(self) -> Tensor:
        """The current mean as a K x K tensor in ``task_names`` order (NaN where unmeasured)."""
        mean = self.mean()
        return torch.tensor(
            [[math.nan if mean[a][b] is None else mean[a][b] for b in self.task_names] for a in self.task_names],
            dtype=torch.float64,
        )
