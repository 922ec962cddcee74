"""The balancing interface: per-task losses in, one update (the ``.grad`` of every parameter) out."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from taskloom.sharing.base import MultiTaskModule

log = logging.getLogger(__name__)

#: the loss scaler's multiplication (``torch.amp.GradScaler.scale``) under fp16 mixed precision
LossScale = Callable[[Tensor], Tensor]


class SeededGenerator:
    """A ``torch.Generator`` made on the device where the numbers are drawn, so none are copied from the host.

    Seeded once from ``seed`` (None: draws use torch's global generator). ``state()`` (a byte
    tensor, empty before the first draw) and ``load(state)`` carry it through a balancer's
    ``state_dict``; a loaded state is applied on the device of the next draw, so a resumed run repeats.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._pending: Tensor | None = None

    def on(self, device: torch.device | str) -> torch.Generator | None:
        """The generator on ``device`` (made there on first use or after a move: from a loaded state, else seeded)."""
        if self.seed is None:
            return None
        device = torch.device(device)
        if device.type != "cpu" and device.index is None:
            device = torch.device(device.type, torch.get_device_module(device.type).current_device())
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            pending, self._pending = self._pending, None
            try:
                if pending is None:
                    self._generator.manual_seed(int(self.seed))
                else:
                    self._generator.set_state(pending)
            except RuntimeError as error:  # a state saved by another device's generator
                log.warning("cannot resume the random draws on %s (%s); starting again from seed %s",
                            device, error, self.seed)
                self._generator.manual_seed(int(self.seed))
        return self._generator

    def state(self) -> Tensor:
        """The generator's state as a byte tensor (empty before the first draw)."""
        if self._pending is not None:
            return self._pending.clone()
        if self._generator is None:
            return torch.empty(0, dtype=torch.uint8)
        return self._generator.get_state()

    def load(self, state: Tensor | Mapping[str, Any]) -> None:
        """Continue from a ``state()`` at the next draw (an empty one starts again from the seed)."""
        if isinstance(state, Mapping):  # the layout of earlier checkpoints
            state = state.get("generator_state", torch.empty(0, dtype=torch.uint8))
        self._generator = None
        self._pending = state.detach().to("cpu", torch.uint8).clone() if state.numel() else None


class Balancer(nn.Module):
    """Turns a dict of per-task losses into gradients on the model's parameters.

    The trainer calls ``backward(losses, model)`` once per step, after zeroing the
    gradients and before the optimizer step; ``losses`` holds only the tasks labelled in
    the batch. A balancer may own parameters (they join the optimizer) and state (it is
    saved in checkpoints through ``state_dict``). ``on_epoch_end`` receives the epoch's mean
    training loss per task, for methods that adapt per epoch. Under fp16 mixed precision the
    trainer passes ``scale`` (the ``GradScaler``'s): the method still sees the true losses and
    gradients, and only what it back-propagates is scaled (so fp16 gradients do not underflow
    and the scaler can skip a step whose gradients overflowed).
    """

    needs_task_gradients: bool = False
    needs_post_step_losses: bool = False

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        self.task_names = list(task_names)
        self._last_weights: dict[str, Tensor] = {}
        #: under data parallelism, the trainer's :class:`~taskloom.train.distributed.Communicator` (else None)
        self.communicator: Any = None

    def reduced_parameters(self, model: MultiTaskModule) -> list[Tensor]:
        """The model parameters whose ``.grad`` this method already summed over the ranks (the trainer skips them)."""
        return []

    def backward(self, losses: Mapping[str, Tensor], model: MultiTaskModule, scale: LossScale | None = None) -> None:
        raise NotImplementedError

    def post_step(self, losses: Mapping[str, Tensor]) -> None:
        """Hook for methods that need the losses of the same batch after the step (for example FAMO).

        Called by the trainer, without gradients, only when ``needs_post_step_losses``.
        """

    def on_epoch_end(self, epoch_losses: Mapping[str, float]) -> None:
        """Hook for methods that update per epoch (for example DWA)."""

    def last_weights(self) -> dict[str, float]:
        """Task weights used in the last step, for logging (one host transfer)."""
        if not self._last_weights:
            return {}
        names = list(self._last_weights)
        values = torch.stack([torch.as_tensor(self._last_weights[n], dtype=torch.float32).detach().cpu() for n in names])
        return dict(zip(names, values.tolist()))


class LossWeighting(Balancer):
    """Loss-level methods: the update is the gradient of a weighted sum of the task losses."""

    def weights(self, losses: Mapping[str, Tensor]) -> Mapping[str, Tensor | float]:
        raise NotImplementedError

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The scalar whose gradient is the update."""
        weights = self.weights(losses)
        self._last_weights = dict(weights)
        total = None
        for name, loss in losses.items():
            weight = weights[name]
            term = loss if isinstance(weight, float) and weight == 1.0 else weight * loss
            total = term if total is None else total + term
        return total

    def backward(self, losses: Mapping[str, Tensor], model: MultiTaskModule, scale: LossScale | None = None) -> None:
        if losses:
            total = self.combine(losses)
            (total if scale is None else scale(total)).backward()
