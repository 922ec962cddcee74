"""Gradient-level balancing: per-task gradients from the engine, one aggregated update, heads trained as usual.

A :class:`GradientBalancer` turns the K per-task gradients of the shared parameters (or,
with ``mode="representation"``, of the shared representation: the MGDA-UB trick of
Sener & Koltun 2018) into one update direction; every head gets its own task's gradient.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from taskloom.balancing import gramian_engine, layer_gramian
from taskloom.balancing.base import Balancer, LossScale
from taskloom.balancing.jacobian import (
    VmapFallback,
    chain_gradients,
    head_gradients,
    task_gradients,
    write_gradient,
    write_gradients,
)
from taskloom.sharing.base import MultiTaskModule, unique

MODES = ("parameters", "representation")

log = logging.getLogger(__name__)


class GradientBalancer(Balancer):
    """Base of the gradient-level methods: subclasses implement :meth:`combine` (K x P -> direction, weights).

    A trainer gets the outputs with ``outputs = balancer.outputs(model, inputs)``, which
    keeps the model's representation for the next ``backward(losses, model)``: required in
    representation mode, and the fast path in parameter mode (per-task gradients of the
    representation from the heads, then one batched pass through the trunk). Or it passes
    the representation itself: ``z = model.representation(inputs)``, ``outputs =
    model.heads_forward(z)``, ``backward(losses, model, representation=z)``. Parameter mode
    also works with a plain ``model(inputs)`` and ``backward(losses, model)``. ``batched``
    picks the engine's path for the trunk (None: batched on accelerators); where vmap cannot
    run, this balancer goes sequential from then on (its own ``vmap_fallback``, no global flag).
    ``task_chunk`` (B) bounds the memory with many tasks: per-task gradients are held B tasks at
    a time, twice, and recomputed (see :mod:`~taskloom.balancing.gramian_engine`); None (default)
    holds all K at once. ``engine`` picks how parameter mode gets the per-task gradients: ``auto``
    (default) uses the layer Gramian engine (:mod:`~taskloom.balancing.layer_gramian`: the K x K
    Gramian layer by layer, never the K x P Jacobian) for a Gramian-based method on a trunk of
    Linear layers and the full engine otherwise, logging which and why; ``gramian`` insists
    (refusing what it cannot run); ``jacobian`` always takes the full engine.
    """

    needs_task_gradients = True
    #: the values of ``mode`` the method is defined for (a config can check them before building)
    modes: tuple[str, ...] = MODES
    #: True when :meth:`combine` takes ``representation=`` (the shared representation) in representation mode
    combines_representation: bool = False
    #: True when :meth:`combine` returns ``weights @ grads`` with weights a function of the Gramian
    #: ``grads @ grads.T`` alone (and of the method's state): what data-parallel representation mode needs
    weights_from_gram: bool = False
    #: buffers sized at the first step (a K x P state): on load, a checkpoint's size replaces the empty placeholder
    lazy_buffers: tuple[str, ...] = ()

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 task_chunk: int | None = None, engine: str = "auto") -> None:
        super().__init__(task_names)
        if mode not in MODES:
            raise ValueError(f"balancing.options.mode must be one of {list(MODES)}, got {mode!r}")
        self.mode = mode
        self.batched = batched
        self.task_chunk = gramian_engine.check_task_chunk(task_chunk, type(self).__name__)
        if self.task_chunk is not None:
            self.check_task_chunk()
        self.engine = layer_gramian.check_engine(engine, type(self).__name__)
        if self.engine == "gramian":
            self._check_gramian_engine()
        self._engine_logged = False
        self._engine_choice: tuple[str, str] | None = None
        self._capture: layer_gramian.Capture | None = None
        self.vmap_fallback = VmapFallback()
        self._representation: Tensor | None = None
        self._weights: tuple[list[str], Tensor] | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in self.lazy_buffers:
            saved, current = state_dict.get(prefix + name), getattr(self, name)
            if saved is not None and saved.shape != current.shape:
                setattr(self, name, torch.empty(saved.shape, dtype=saved.dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def needs_representation(self) -> bool:
        """True when the trainer must route the forward pass through :meth:`outputs`."""
        return self.mode == "representation"

    def reduced_parameters(self, model: MultiTaskModule) -> list[Tensor]:
        """In parameter mode under data parallelism the shared parameters get the combined global update.

        Not with ``task_chunk`` for a Gramian method: its weighted backward is local (the trainer sums it).
        """
        if self.communicator is None or self.mode != "parameters":
            return []
        if self.task_chunk is not None and self.weights_from_gram:  # its weighted backward is local
            return []
        return list(model.shared_parameters())

    def check_task_chunk(self) -> None:
        """Refuse, naming the method, ``task_chunk`` for a method whose update is not a function of the Gramian."""
        if not self.weights_from_gram:
            raise ValueError(
                f"{type(self).__name__} cannot use balancing.options.task_chunk: its update is not a function of "
                "the task gradients' Gramian, so it needs all of them at once; remove task_chunk")

    def _check_gramian_engine(self) -> None:
        """Refuse, naming the method, ``engine: gramian`` where the layer Gramian engine cannot apply."""
        method = type(self).__name__
        if not self.weights_from_gram:
            raise ValueError(f"{method} cannot use balancing.options.engine: gramian: its update is not a function of "
                             "the task gradients' Gramian; use engine: auto or jacobian")
        if self.mode != "parameters":
            raise ValueError(f"balancing.options.engine: gramian is for mode 'parameters' ({method} has mode "
                             f"{self.mode!r}, whose Gramian is already the small one of the representation); "
                             "use engine: auto")
        if self.task_chunk is not None:
            raise ValueError(f"{method}: balancing.options.engine: gramian and task_chunk are two different engines; "
                             "give one of them")

    def _layer_gramian_wanted(self) -> bool:
        """True when this step may take the layer Gramian engine (the model's layers decide the rest)."""
        return (self.engine != "jacobian" and self.mode == "parameters" and self.weights_from_gram
                and self.task_chunk is None)

    def _choose_engine(self, model: MultiTaskModule, capture: "layer_gramian.Capture | None",
                       scale: LossScale | None) -> list[layer_gramian.Layer] | None:
        """The layers for the layer Gramian engine this step, or None for the full engine (logged on change)."""
        reason = ""
        if not self._layer_gramian_wanted():
            reason = ("asked for (engine: jacobian)" if self.engine == "jacobian" else
                      "representation mode" if self.mode != "parameters" else
                      "task_chunk" if self.task_chunk is not None else
                      "the method's update is not a function of the Gramian")
        elif self.communicator is not None:
            reason = "data parallelism is not supported by the layer Gramian engine"
        elif capture is None:
            reason = "the forward did not go through balancer.outputs (torch.compile or a plain model(inputs))"
        elif not capture.layers:
            reason = capture.reason
        else:
            reason = capture.problem(scale)
        if reason and self.engine == "gramian":
            raise ValueError(f"{type(self).__name__}: balancing.options.engine: gramian cannot run: {reason}; "
                             "use engine: auto (falls back to the full engine) or jacobian")
        choice = ("full Jacobian", reason) if reason else ("layer Gramian", f"{len(capture.layers)} shared layers")
        if choice != self._engine_choice:
            self._engine_choice = choice
            log.info("%s: gradient engine: %s (%s)", type(self).__name__, *choice)
        return None if reason else capture.layers

    def _layer_gramian_backward(self, values: list[Tensor], names: list[str], model: MultiTaskModule,
                                representation: Tensor | None, layers: list[layer_gramian.Layer]) -> None:
        """One step through the layer Gramian engine: each task's head and trunk factors (one task at a time where
        the trunk pass is sequential, so the K x |z| gradients of z are never held), then the weights and ``w @ J``."""
        rep_grads = None
        if representation is not None:
            own = [list(model.task_parameters(n)) for n in names]

            def rep_grads(t: int) -> Tensor:  # task t's row of z's gradients; its head's gradient written on the way
                grads = torch.autograd.grad(values[t], [representation, *own[t]], retain_graph=True,
                                            allow_unused=True)
                write_gradients(own[t], grads[1:])
                return torch.zeros_like(representation) if grads[0] is None else grads[0]
        else:
            gramian_engine.write_plain_heads(values, model, names)
        try:
            factors = layer_gramian.LayerGramian(values, layers, representation, rep_grads, batched=self.batched,
                                                 fallback=self.vmap_fallback)
        finally:
            for layer in layers:
                layer.calls = []
        factors.write_update(gramian_engine.gramian_weights(self, values, names, factors.gramian(), None))

    def _chunked_backward(self, values: list[Tensor], names: list[str], model: MultiTaskModule,
                          representation: Tensor | None, factor: Tensor | None) -> None:
        """One step with per-task gradients held ``task_chunk`` tasks at a time (the Gramian engine)."""
        gramian_engine.gramian_backward(self, values, names, model, representation, factor)

    def _log_engine(self, k: int) -> None:
        if self._engine_logged or (self.task_chunk is None and self.mode == "parameters"):
            return
        self._engine_logged = True
        if self.task_chunk is None:
            log.info("%s: full gradient engine (%d per-task gradients held at once)", type(self).__name__, k)
        else:
            log.info("%s: task-chunked engine, %d tasks in chunks of %d (at most %d per-task gradients held)",
                     type(self).__name__, k, self.task_chunk, 2 * min(self.task_chunk, k))

    def check_data_parallel(self) -> None:
        """Refuse, naming the method, a mode this method cannot run under data parallelism."""
        if self.mode == "representation" and not self.weights_from_gram:
            raise ValueError(
                f"{type(self).__name__} does not support data-parallel training in representation mode yet: its "
                "update is not a function of the batch Gramian (which is all the ranks share); "
                "use balancing.options.mode='parameters' or train on one process")

    def task_index(self, names: Sequence[str]) -> Tensor:
        """Positions of ``names`` in ``task_names`` (for state kept per task)."""
        try:
            return torch.tensor([self.task_names.index(n) for n in names], dtype=torch.long)
        except ValueError:
            unknown = [n for n in names if n not in self.task_names]
            raise KeyError(f"losses name tasks {unknown} that this balancer was not built for: {self.task_names}")

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        """The update direction (P) from the K x P gradients of tasks ``names``, and the task weights if any.

        A method with ``combines_representation = True`` also gets ``representation=z`` in
        representation mode (its rows are then gradients of z, flattened).
        """
        raise NotImplementedError

    def transform_losses(self, losses: list[Tensor]) -> list[Tensor]:
        """The per-task objectives whose gradients the method combines (DB-MTL uses log losses)."""
        return losses

    def outputs(self, model: MultiTaskModule, inputs: Any) -> dict[str, Tensor]:
        """The model's outputs, through ``model.representation`` when it has one (kept for ``backward``).

        In parameter mode this enables the fast path (heads first, then one batched pass
        through the trunk); in representation mode it is required.
        """
        self._capture = None
        if self._layer_gramian_wanted() and self.communicator is None and torch.is_grad_enabled():
            layers, reason = layer_gramian.plan_layers(model, model.shared_parameters())
            capture = layer_gramian.Capture(layers, reason)
            with capture:
                result = self._forward(model, inputs)
            self._capture = capture
            return result
        return self._forward(model, inputs)

    def _forward(self, model: MultiTaskModule, inputs: Any) -> dict[str, Tensor]:
        if not getattr(model, "has_representation", False):
            if self.mode == "representation":
                self._check_representation(model)
            return model(inputs)
        representation = model.representation(inputs)
        self._representation = representation
        return model.heads_forward(representation)

    def _check_representation(self, model: MultiTaskModule) -> None:
        if not getattr(model, "has_representation", False):
            raise ValueError(
                f"balancing.options.mode='representation' needs a model with one shared representation; "
                f"{type(model).__name__} has none: use mode='parameters'"
            )

    def backward(
        self, losses: Mapping[str, Tensor], model: MultiTaskModule, representation: Tensor | None = None,
        scale: LossScale | None = None,
    ) -> None:
        names = list(losses)
        representation = representation if representation is not None else self._representation
        self._representation = None
        capture, self._capture = self._capture, None
        if not names:
            return
        if self.mode == "representation":
            self._check_representation(model)
            if representation is None:
                raise ValueError(
                    "mode='representation' needs the shared representation: get the outputs with "
                    "balancer.outputs(model, inputs), or pass backward(losses, model, representation=z)"
                )
        values = self.transform_losses([losses[n] for n in names])
        factor = None
        if scale is not None:  # fp16: back-propagate scaled objectives, combine the true gradients
            values = [scale(v) for v in values]
            factor = scale(torch.ones((), device=values[0].device))
        self._log_engine(len(names))
        if self.task_chunk is not None:
            self._chunked_backward(values, names, model, representation, factor)
            return
        if self.mode == "parameters" and model.shared_parameters():
            layers = self._choose_engine(model, capture, scale)
            if layers is not None:
                self._layer_gramian_backward(values, names, model, representation, layers)
                return
        if representation is not None:
            own = [model.task_parameters(n) for n in names]
            rep_grads, head_grads = head_gradients(values, representation, own)
            for params, grads in zip(own, head_grads):
                write_gradients(params, grads)
            if self.mode == "representation":
                if self.communicator is not None:
                    direction = self._data_parallel_direction(rep_grads, names, factor)
                else:
                    direction = self._scaled_combine(rep_grads, names, factor, representation)
                representation.backward(direction.view_as(representation).to(representation.dtype))
                return
            shared = model.shared_parameters()
            grads = chain_gradients(representation, shared, rep_grads, batched=self.batched,
                                    fallback=self.vmap_fallback)
            grads = self._global_task_gradients(grads)
        else:
            heads = unique(p for n in names for p in model.task_parameters(n))
            if heads:
                total = values[0] if len(values) == 1 else torch.stack([v.reshape(()) for v in values]).sum()
                write_gradients(heads, torch.autograd.grad(total, heads, retain_graph=True, allow_unused=True))
            shared = model.shared_parameters()
            if not shared:
                return
            grads = task_gradients(values, shared, batched=self.batched, fallback=self.vmap_fallback)
            grads = self._global_task_gradients(grads)
        write_gradient(shared, self._scaled_combine(grads, names, factor))

    def _global_task_gradients(self, grads: Tensor) -> Tensor:
        """Under data parallelism, the K x P per-task gradients of the whole batch (the ranks' sum)."""
        if self.communicator is None:
            return grads
        return self.communicator.all_reduce_sum(grads.contiguous())

    def _data_parallel_direction(self, rep_grads: Tensor, names: Sequence[str], factor: Tensor | None) -> Tensor:
        """This rank's rows of the combined gradient of the representation, from the global K x K Gramian.

        The rows of ``rep_grads`` are this rank's samples, so the global Gramian is the sum of the
        ranks' ones (one K x K all-reduce). The method combines a K x K factor R with R R^T equal to
        it (same Gramian, hence the same weights), and the direction is those weights times the local rows.
        """
        self.check_data_parallel()
        local = rep_grads.float() if rep_grads.dtype in (torch.float16, torch.bfloat16) else rep_grads
        if factor is not None:
            local = local / factor.to(local.dtype)
        gramian = self.communicator.all_reduce_sum((local @ local.T).double())
        eigenvalues, eigenvectors = torch.linalg.eigh(gramian)
        root = (eigenvectors * eigenvalues.clamp_min(0).sqrt()).to(local.dtype)
        _, weights = self.combine(root, names)
        if weights is None:
            raise ValueError(f"{type(self).__name__} returned no task weights; it cannot run data-parallel in "
                             "representation mode")
        self._weights = (list(names), weights.detach())
        direction = weights.to(local.dtype) @ local
        return direction if factor is None else direction * factor.to(direction.dtype)

    def _scaled_combine(self, grads: Tensor, names: Sequence[str], factor: Tensor | None,
                        representation: Tensor | None = None) -> Tensor:
        """The update from gradients in at least float32; with a loss scale, of the unscaled ones, scaled back.

        A scaled step whose gradients overflowed returns their sum (non-finite, so the scaler
        skips the step) and leaves the method's state alone: one host sync, only under fp16.
        """
        if grads.dtype in (torch.float16, torch.bfloat16):
            grads = grads.float()
        if factor is None:
            return self._combine(grads, names, representation)
        if not bool(torch.isfinite(grads).all()):
            return grads.sum(0)
        return self._combine(grads / factor.to(grads.dtype), names, representation) * factor.to(grads.dtype)

    def _combine(self, grads: Tensor, names: Sequence[str], representation: Tensor | None = None) -> Tensor:
        if representation is not None and self.combines_representation:
            direction, weights = self.combine(grads, names, representation=representation.detach())
        else:
            direction, weights = self.combine(grads, names)
        if weights is not None:
            self._weights = (list(names), weights.detach())
        return direction

    def last_weights(self) -> dict[str, float]:
        """Task weights of the last step, for logging (one host transfer)."""
        if self._weights is None:
            return {}
        names, weights = self._weights
        return dict(zip(names, weights.to("cpu", torch.float32).tolist()))


class AggregatorBalancer(GradientBalancer):
    """A stateless method given by a weight function of the Gram matrix (``weights_fn(gram, **options)``)."""

    weights_fn: Any = None
    weights_from_gram = True

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 task_chunk: int | None = None, engine: str = "auto", **options: Any) -> None:
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
        self.options = options

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        weights = type(self).weights_fn(grads @ grads.T, **self.options).to(grads.dtype)
        return weights @ grads, weights
