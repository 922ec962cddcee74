"""The layer Gramian engine: the K x K Gramian of the per-task gradients, layer by layer, never the K x P Jacobian.

For a method whose update is ``w @ J`` with w a function of G = J J^T (``weights_from_gram``),
parameter mode needs only G. The Jacobian of the shared parameters splits by layer,
G = sum_l J_l J_l^T, and for an ``nn.Linear`` with input X (N x in) and task t's gradient of
its output D_t (N x out), task t's weight gradient is D_t^T X, so

    G_l[s, t] = <D_s^T X, D_t^T X> = sum((D_s D_t^T) * (X X^T))   (+ sum(D_s) . sum(D_t) for the bias)

computed in the cheaper of two orders (N^2 in + K N^2 out + K^2 N out through X X^T, or
K N in out + K^2 in out through the per-layer weight gradients). The D_t come from K
backward passes (one vmapped pass on accelerators) that stop at the layers' outputs and
compute no weight gradient. The update ``w @ J`` is then written layer by layer from the
same factors (no further backward pass): the same update as the full engine
(:mod:`~taskloom.balancing.jacobian`), exactly up to rounding. The idea of using the Gramian alone is that of TorchJD (Quinton & Rey 2024,
"Jacobian Descent for Multi-Objective Optimization"); the per-layer factorisation is the
per-example-gradient trick of Goodfellow 2015 ("Efficient per-example gradient computations").

Supported: every shared parameter belongs to a layer whose plain forward computes it (called any
number of times; the calls add up), of one of these kinds (:mod:`~taskloom.balancing.layer_kinds`):
``nn.Linear``; ``nn.Conv2d`` with groups=1 and padding_mode 'zeros' (any stride, dilation,
padding, 'same' and 'valid' included; as a Linear map of its input patches, in the cheaper of
the same two orders); ``nn.BatchNorm1d/2d/3d`` (batch statistics in training,
running stats in evaluation), ``nn.LayerNorm`` and ``nn.GroupNorm`` with affine parameters
(rows sum D_t * x_hat and sum D_t, x_hat recomputed from the captured input). Anything else (a
grouped or reflect-padded convolution, an embedding, a tied parameter), mixed precision (a loss
scale or autocast), data parallelism, an in-place change of a layer's input, or a forward that
did not go through ``balancer.outputs`` falls back to the full engine with the reason logged, or
is refused when ``engine: gramian`` was asked for. A layer's output may change in place (BatchNorm
then ``ReLU(inplace=True)``, a residual ``out += identity``): the D_t are taken at the autograd
edge the layer's output had when it was made. No second forward runs,
so BatchNorm's running stats move once per step, in the forward.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import torch
from torch import Tensor, nn
from torch.autograd.graph import get_gradient_edge

from taskloom.balancing.jacobian import VmapFallback, use_vmap, vmapped_grads
from taskloom.balancing.layer_kinds import kind_of, norm_state

log = logging.getLogger(__name__)

ENGINES = ("auto", "gramian", "jacobian")


def check_engine(engine: Any, method: str) -> str:
    """``engine`` as one of :data:`ENGINES`, else a ValueError naming the option and the method."""
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"balancing.options.engine of {method} must be one of {list(ENGINES)} (auto picks the "
                         f"layer Gramian engine where it applies), got {engine!r}")
    return engine


@dataclass
class Layer:
    """One shared layer: which of its parameters are shared, and the calls of the current forward.

    ``states`` has, per call, what a norm layer normalized with (BatchNorm's running stats in
    evaluation, else None); ``edges`` the autograd edge of the call's output as the layer made it,
    so that its gradient is still the layer output's after an in-place change (``ReLU(inplace=True)``,
    ``out += identity``).
    """

    name: str
    module: nn.Module
    weight: bool
    bias: bool
    calls: list[tuple[Tensor, Tensor, int]] = field(default_factory=list)
    states: list[Any] = field(default_factory=list)
    edges: list[Any] = field(default_factory=list)


def plan_layers(model: nn.Module, shared: Sequence[Tensor]) -> tuple[list[Layer], str]:
    """The shared layers of ``model`` and "", or no layers and the reason the engine cannot run."""
    wanted = {id(p) for p in shared}
    owners: dict[int, list[str]] = {}
    layers: list[Layer] = []
    for name, module in model.named_modules():
        own = [(pname, p) for pname, p in module.named_parameters(recurse=False) if id(p) in wanted]
        if not own:
            continue
        for _, parameter in own:
            owners.setdefault(id(parameter), []).append(name)
        kind, reason = kind_of(module, name)
        if kind is None:
            return [], reason
        names = {pname for pname, _ in own}
        layers.append(Layer(name, module, "weight" in names, "bias" in names))
    tied = [names for names in owners.values() if len(names) > 1]
    if tied:
        return [], f"a shared parameter is tied between layers {', '.join(tied[0])}"
    if len(owners) != len(wanted):
        return [], "a shared parameter belongs to no module"
    return layers, ""


class Capture:
    """Forward hooks on the planned layers that keep each call's input and output (for one step)."""

    def __init__(self, layers: list[Layer], reason: str = "") -> None:
        self.layers = layers
        self.reason = reason
        self.autocast = False
        self._handles: list[Any] = []

    def __enter__(self) -> "Capture":
        self.autocast = torch.is_autocast_enabled()
        for layer in self.layers:
            layer.calls, layer.states, layer.edges = [], [], []
            self._handles.append(layer.module.register_forward_hook(functools.partial(_keep, layer)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def problem(self, scale: Any) -> str:
        """Why this capture cannot give the Gramian ("" when it can)."""
        if self.autocast or scale is not None:
            return "mixed precision (autocast or a loss scale) is not supported by the layer Gramian engine"
        for layer in self.layers:
            if not layer.calls:
                return f"shared layer {layer.name} was not called in the forward (or its parameters are used " \
                       "outside its forward)"
            for x, out, x_version in layer.calls:  # the output may change in place: its edge is kept
                if x._version != x_version:
                    return f"the input of shared layer {layer.name} was modified in place"
                if out.dtype != layer.module.weight.dtype or x.dtype != out.dtype:
                    return "mixed precision (autocast) is not supported by the layer Gramian engine"
                if not out.requires_grad:
                    return f"the output of shared layer {layer.name} does not require grad"
        return ""


def _keep(layer: Layer, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    layer.calls.append((inputs[0], output, inputs[0]._version))
    layer.states.append(norm_state(module))
    layer.edges.append(get_gradient_edge(output) if output.requires_grad else output)


RepGrads = Union[Tensor, Callable[[int], Tensor]]


def _task_gradients(values: Sequence[Tensor], outputs: Sequence[Any], representation: Tensor | None,
                    rep_grads: RepGrads | None, batched: bool | None, fallback: VmapFallback | None):
    """Yield (tasks, grads): per-task gradients of the objectives w.r.t. ``outputs``, no weight gradient computed.

    ``grads[i]`` has a leading task dimension (the tasks ``tasks``) or is None where no task reaches
    ``outputs[i]``. From the representation's per-task gradients ``rep_grads`` when there is a
    representation (one pass through the trunk per task), else from the objectives themselves; all
    K at once in one vmapped pass where :func:`~taskloom.balancing.jacobian.use_vmap` says so
    (falling back to one task at a time as the full engine does), so only one task's are alive.
    ``rep_grads`` may be a function of the task index giving that task's row: then the rows are
    made one at a time (the K x |z| matrix is never held) unless the pass is vmapped.
    """
    k = len(values)
    outputs = list(outputs)
    if representation is not None:
        root = representation
        if callable(rep_grads) and use_vmap(root, k, batched, fallback):
            rep_grads = torch.stack([rep_grads(t).reshape(-1) for t in range(k)])
        row = rep_grads if callable(rep_grads) else rep_grads.__getitem__
        cotangents = None if callable(rep_grads) else rep_grads.reshape(k, *root.shape).to(root.dtype)
    else:
        root = torch.stack([v.reshape(()) for v in values])
        cotangents = torch.eye(k, dtype=root.dtype, device=root.device)
    grads = None if cotangents is None else vmapped_grads(root, outputs, cotangents, batched, fallback)
    if grads is not None:
        yield slice(0, k), grads
        return
    for t in range(k):
        if representation is None:
            grads = torch.autograd.grad(values[t], outputs, retain_graph=True, allow_unused=True)
        else:
            cotangent = row(t).reshape(root.shape).to(root.dtype)
            grads = torch.autograd.grad(root, outputs, grad_outputs=cotangent, retain_graph=True,
                                        allow_unused=True)
        yield slice(t, t + 1), tuple(None if g is None else g.unsqueeze(0) for g in grads)


def _LayerRows(layer: Layer, k: int) -> Any:
    """The per-task factors of ``layer``'s Gramian block, of its kind (:mod:`~taskloom.balancing.layer_kinds`)."""
    kind, _ = kind_of(layer.module, layer.name)
    return kind(layer, k)


class LayerGramian:
    """The per-layer factors of one step's per-task gradients: their Gramian, and the update for given weights.

    ``rep_grads`` (K x |z|) are the per-task gradients of ``representation`` when the objectives
    reach the trunk through it (then only the trunk is back-propagated); else the objectives are.
    No K x P Jacobian is formed: a layer holds K x min-ish(out x in, N x out) factors (see
    :mod:`~taskloom.balancing.layer_kinds`), and the update w @ J is written from them without another backward pass.
    """

    def __init__(self, values: Sequence[Tensor], layers: Sequence[Layer], representation: Tensor | None = None,
                 rep_grads: RepGrads | None = None, batched: bool | None = None,
                 fallback: VmapFallback | None = None) -> None:
        k = len(values)
        self.rows = [_LayerRows(layer, k) for layer in layers]
        outputs = [edge for layer in layers for edge in (layer.edges or [out for _, out, _ in layer.calls])]
        reached = False
        for tasks, grads in _task_gradients(values, outputs, representation, rep_grads, batched, fallback):
            reached = reached or any(g is not None for g in grads)
            position = 0
            for layer_rows in self.rows:
                calls = len(layer_rows.shapes)
                layer_rows.fill(tasks, grads[position:position + calls])
                position += calls
            del grads
        if not reached:
            raise ValueError("the losses do not depend on the shared layers recorded by balancer.outputs: compute "
                             "them from the outputs that balancer.outputs(model, inputs) returned this step")

    def gramian(self) -> Tensor:
        """G = J J^T (K x K, float64), the sum of the layers' blocks."""
        return functools.reduce(torch.add, (rows.block() for rows in self.rows))

    def write_update(self, weights: Tensor) -> None:
        """Add ``weights @ J`` to the shared parameters' ``.grad``, layer by layer."""
        for rows in self.rows:
            rows.update(weights.detach())


def layer_gramian(values: Sequence[Tensor], layers: Sequence[Layer], representation: Tensor | None = None,
                  rep_grads: RepGrads | None = None, batched: bool | None = None,
                  fallback: VmapFallback | None = None) -> Tensor:
    """G = J J^T (K x K, float64) of the shared parameters of ``layers``, from their captured calls."""
    return LayerGramian(values, layers, representation, rep_grads, batched, fallback).gramian()
