"""Auxiliary tasks around any balancing method: scheduled weights and gradient-similarity gates.

The main tasks go through the configured method unchanged. Each auxiliary task's loss is
multiplied by its scheduled weight (:func:`~taskloom.balancing.auxiliary.scheduled_weight`, with
progress = optimizer step / total steps) and, with gating, by its gate from the cosine between its
gradient and the summed main gradient on the shared parameters (Du et al. 2018, "Adapting
auxiliary losses using gradient similarity"). Only gating pays for per-task gradients.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from taskloom.balancing.auxiliary import SCHEDULES, scheduled_weight, similarity_gates
from taskloom.balancing.base import Balancer, LossScale
from taskloom.balancing.jacobian import VmapFallback, task_gradients
from taskloom.sharing.base import MultiTaskModule

log = logging.getLogger(__name__)

GATINGS = ("none", "unweighted", "weighted")


@dataclass(frozen=True)
class AuxiliarySpec:
    """How one auxiliary task's loss is weighted: ``weight`` decayed by ``schedule``, times a gate by ``gating``."""

    weight: float = 1.0
    schedule: str = "constant"
    gating: str = "none"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"auxiliary.schedule {self.schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")
        if self.gating not in GATINGS:
            raise ValueError(f"auxiliary.gating {self.gating!r} is unknown; use one of {', '.join(GATINGS)}")
        if self.weight < 0:
            raise ValueError(f"auxiliary.weight must be >= 0, got {self.weight}")


class AuxiliaryWeighting(Balancer):
    """Wraps ``inner`` (built for the main tasks) and adds the weighted, optionally gated, auxiliary losses.

    ``total_steps`` (the optimizer steps of the whole run) sets the schedules' progress; the
    :class:`~taskloom.train.trainer.Trainer` gives it through :meth:`plan` when ``fit`` starts. The
    step count and the last gates are buffers, so a checkpoint restores them.
    """

    def __init__(self, inner: Balancer, auxiliary: Mapping[str, AuxiliarySpec], total_steps: int | None = None,
                 batched: bool | None = None) -> None:
        if not auxiliary:
            raise ValueError("AuxiliaryWeighting needs at least one auxiliary task")
        overlap = sorted(set(auxiliary) & set(inner.task_names))
        if overlap:
            raise ValueError(f"tasks {overlap} are both main (weighted by {type(inner).__name__}) and auxiliary")
        super().__init__([*inner.task_names, *auxiliary])
        self.inner = inner
        self.auxiliary = dict(auxiliary)
        self.auxiliary_names = list(auxiliary)
        self.total_steps = total_steps
        self.batched = batched
        self.vmap_fallback = VmapFallback()
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("gates", torch.ones(len(auxiliary)))
        self._weights_now = {name: spec.weight for name, spec in self.auxiliary.items()}
        self._gate_sum = torch.zeros(len(auxiliary))
        self._gate_steps = 0
        self._report: dict[str, dict[str, Any]] = {}

    # -- what the trainer asks of a balancer, answered by the inner method -------------------------
    @property
    def needs_task_gradients(self) -> bool:  # type: ignore[override]
        return self.inner.needs_task_gradients

    @property
    def needs_post_step_losses(self) -> bool:  # type: ignore[override]
        return self.inner.needs_post_step_losses

    @property
    def needs_representation(self) -> bool:
        return bool(getattr(self.inner, "needs_representation", False))

    def outputs(self, model: MultiTaskModule, inputs: Any) -> dict[str, Tensor]:
        """The inner gradient method's forward (it keeps the shared representation for its backward)."""
        return self.inner.outputs(model, inputs)

    def reduced_parameters(self, model: MultiTaskModule) -> list[Tensor]:
        return self.inner.reduced_parameters(model)

    def check_data_parallel(self) -> None:
        """Refuse what would let one rank's auxiliary gradients decide the update (gating, a reducing method)."""
        self.inner.communicator = self.communicator
        gated = [n for n, spec in self.auxiliary.items() if spec.gating != "none"]
        if gated:
            raise ValueError(f"auxiliary gating ({gated}) is not supported under data-parallel training yet: the "
                             "gates would come from each rank's own batch; set gating: none or train on one process")
        if self.communicator is not None and self.inner.needs_task_gradients:
            raise ValueError(f"auxiliary tasks with {type(self.inner).__name__} are not supported under data-parallel "
                             "training yet; use a loss-weighting method or train on one process")
        check = getattr(self.inner, "check_data_parallel", None)
        if callable(check):
            check()

    def plan(self, total_steps: int) -> None:
        """Set the number of optimizer steps of the whole run (the schedules' denominator)."""
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)

    def progress(self) -> float:
        """Step / total steps, in [0, 1]."""
        if self.total_steps is None:
            if all(spec.schedule == "constant" for spec in self.auxiliary.values()):
                return 0.0
            raise ValueError("a decaying auxiliary schedule needs the run's length: call plan(total_steps) "
                             "before the first step (the Trainer does)")
        return min(1.0, int(self.step) / self.total_steps)

    # -- one step -----------------------------------------------------------------------------------
    def backward(self, losses: Mapping[str, Tensor], model: MultiTaskModule, scale: LossScale | None = None,
                 **kwargs: Any) -> None:
        unknown = [n for n in losses if n not in self.task_names]
        if unknown:
            raise KeyError(f"losses name tasks {unknown} that this balancer was not built for: {self.task_names}")
        main = {n: loss for n, loss in losses.items() if n not in self.auxiliary}
        present = [n for n in self.auxiliary_names if n in losses]
        self.step += 1
        progress = self.progress()
        weights = {n: scheduled_weight(s.schedule, s.weight, progress) for n, s in self.auxiliary.items()}
        self._weights_now = weights
        gates = self._gates(main, losses, present, weights, model)
        terms = []
        for name in present:
            index = self.auxiliary_names.index(name)
            factor = weights[name] if self.auxiliary[name].gating == "none" else weights[name] * gates[index]
            terms.append(losses[name] * factor)
        if terms:
            total = torch.stack([t.reshape(()) for t in terms]).sum()
            (total if scale is None else scale(total)).backward(retain_graph=bool(main))
        if main:
            if scale is None:
                self.inner.backward(main, model, **kwargs)
            else:
                self.inner.backward(main, model, scale=scale, **kwargs)
        elif self.inner.needs_task_gradients:
            self.inner.backward({}, model, **kwargs)  # drops the representation it kept

    def _gates(self, main: Mapping[str, Tensor], losses: Mapping[str, Tensor], present: Sequence[str],
               weights: Mapping[str, float], model: MultiTaskModule) -> Tensor:
        """This step's gates (A): computed for the gated auxiliaries present with a non-zero weight, else kept."""
        gated = [n for n in present if self.auxiliary[n].gating != "none" and weights[n] > 0]
        if not gated:
            return self.gates
        shared = [p for p in model.shared_parameters() if p.requires_grad]
        if not main:
            values = torch.zeros(len(gated), device=self.gates.device)
        else:
            main_sum = torch.stack([loss.reshape(()) for loss in main.values()]).sum()
            grads = task_gradients([main_sum, *(losses[n] for n in gated)], shared, batched=self.batched,
                                   retain_graph=True, fallback=self.vmap_fallback).detach()
            values = torch.cat([similarity_gates(grads[:1], grads[1 + i:2 + i],
                                                 self.auxiliary[n].gating == "weighted")
                                for i, n in enumerate(gated)])
        index = torch.tensor([self.auxiliary_names.index(n) for n in gated], device=self.gates.device)
        with torch.no_grad():
            self.gates.index_copy_(0, index, values.to(self.gates.device, self.gates.dtype))
        self._gate_sum = self._gate_sum.to(self.gates.device)
        self._gate_sum.index_add_(0, index, values.to(self.gates.device, self.gates.dtype))
        self._gate_steps += 1
        return self.gates

    def post_step(self, losses: Mapping[str, Tensor]) -> None:
        self.inner.post_step({n: v for n, v in losses.items() if n not in self.auxiliary})

    # -- logging --------------------------------------------------------------------------------------
    def on_epoch_end(self, epoch_losses: Mapping[str, float]) -> None:
        """Forward the main tasks' losses to the inner method; keep the epoch's auxiliary weights and mean gates."""
        self.inner.on_epoch_end({n: v for n, v in epoch_losses.items() if n not in self.auxiliary})
        means = (self._gate_sum / max(1, self._gate_steps)).tolist()
        self._report = {}
        for i, (name, spec) in enumerate(self.auxiliary.items()):
            entry: dict[str, Any] = {"weight": float(self._weights_now[name]), "schedule": spec.schedule,
                                     "gating": spec.gating}
            if spec.gating != "none":
                entry["gate"] = float(means[i]) if self._gate_steps else None
            self._report[name] = entry
        self._gate_sum = torch.zeros_like(self._gate_sum)
        self._gate_steps = 0

    def report(self) -> dict[str, dict[str, Any]]:
        """Per auxiliary task, the scheduled weight at the epoch's last step and its mean gate over the epoch."""
        return dict(self._report)

    def last_weights(self) -> dict[str, float]:
        """The inner method's main-task weights and each auxiliary's effective weight (scheduled x gate)."""
        out = self.inner.last_weights()
        gates = self.gates.detach().cpu().tolist()
        for i, (name, spec) in enumerate(self.auxiliary.items()):
            out[name] = float(self._weights_now[name]) * (1.0 if spec.gating == "none" else gates[i])
        return out
