"""The layer Gramian engine: the K x K Gramian of the per-task gradients, layer by layer, never the K x P Jacobian.

For a method whose update is ``w @ J`` with w a function of G = J J^T (``weights_from_gram``),
parameter mode needs only G. The Jacobian of the shared parameters splits by layer,
G = sum_l J_l J_l^T, and for an ``nn.Linear`` with input X (N x in) and task t's gradient of
its output D_t (N x out), task t's weight gradient is D_t^T X, so

    G_l[s, t] = <D_s^T X, D_t^T X> = sum((D_s D_t^T) * (X X^T))   (+ sum(D_s) . sum(D_t) for the bias)

computed in the cheaper of two orders (N^2 in + K N^2 out + K^2 N out through X X^T, or
K N in out + K^2 in out through the per-layer weight gradients). The D_t come from K
backward passes (one vmapped pass on accelerators) that stop at the layers' outputs and
compute no weight gradient. Then one backward of ``sum_k w_k L_k`` writes the shared update:
the same update as the full engine (:mod:`~taskloom.balancing.jacobian`), exactly up to
rounding. The idea of using the Gramian alone is that of TorchJD (Quinton & Rey 2024,
"Jacobian Descent for Multi-Objective Optimization"); the per-layer factorisation is the
per-example-gradient trick of Goodfellow 2015 ("Efficient per-example gradient computations").

Supported: every shared parameter belongs to an ``nn.Linear`` whose plain forward computes
it (called any number of times; rows of every call are stacked). Anything else (a norm with
affine parameters, a convolution, an embedding, a tied parameter), mixed precision (a loss
scale or autocast), data parallelism, or a forward that did not go through
``balancer.outputs`` falls back to the full engine with the reason logged, or is refused when
``engine: gramian`` was asked for.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from taskloom.balancing.jacobian import VmapFallback, use_vmap

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
    """One shared ``nn.Linear``: which of its parameters are shared, and the calls of the current forward."""

    name: str
    module: nn.Linear
    weight: bool
    bias: bool
    calls: list[tuple[Tensor, Tensor, int, int]] = field(default_factory=list)


def plan_layers(model: nn.Module, shared: Sequence[Tensor]) -> tuple[list[Layer], str]:
    """The shared Linear layers of ``model`` and "" , or no layers and the reason the engine cannot run."""
    wanted = {id(p) for p in shared}
    owners: dict[int, list[str]] = {}
    layers: list[Layer] = []
    for name, module in model.named_modules():
        own = [(pname, p) for pname, p in module.named_parameters(recurse=False) if id(p) in wanted]
        if not own:
            continue
        for _, parameter in own:
            owners.setdefault(id(parameter), []).append(name)
        if type(module).forward is not nn.Linear.forward:
            return [], f"shared layer {name or '<model>'} is a {type(module).__name__}, not an nn.Linear"
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
            layer.calls = []
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
            for x, out, x_version, out_version in layer.calls:
                if x._version != x_version or out._version != out_version:
                    return f"the input or output of shared layer {layer.name} was modified in place"
                if not out.requires_grad:
                    return f"the output of shared layer {layer.name} does not require grad"
        return ""


def _keep(layer: Layer, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    layer.calls.append((inputs[0], output, inputs[0]._version, output._version))


def output_gradients(values: Sequence[Tensor], outputs: Sequence[Tensor], representation: Tensor | None,
                     rep_grads: Tensor | None, batched: bool | None,
                     fallback: VmapFallback | None) -> list[list[Tensor | None]]:
    """Per task, the gradient of its objective w.r.t. each tensor of ``outputs`` (no weight gradients computed).

    From the representation's per-task gradients ``rep_grads`` when there is a representation
    (one pass through the trunk per task), else from the objectives themselves. One vmapped pass
    where :func:`~taskloom.balancing.jacobian.use_vmap` says so (falling back as the full engine does).
    """
    k = len(values)
    outputs = list(outputs)
    if representation is not None:
        root = representation
        cotangents = rep_grads.reshape(k, *representation.shape).to(representation.dtype)
    else:
        root = torch.stack([v.reshape(()) for v in values])
        cotangents = torch.eye(k, dtype=root.dtype, device=root.device)
    if use_vmap(root, k, batched, fallback):
        try:
            grads = torch.autograd.grad(root, outputs, grad_outputs=cotangents, is_grads_batched=True,
                                        retain_graph=True, allow_unused=True)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as error:
            (fallback or VmapFallback()).record(error, k)
        else:
            return [[None if g is None else g[t] for g in grads] for t in range(k)]
    if representation is None:
        return [list(torch.autograd.grad(values[t], outputs, retain_graph=True, allow_unused=True)) for t in range(k)]
    return [list(torch.autograd.grad(root, outputs, grad_outputs=cotangents[t], retain_graph=True, allow_unused=True))
            for t in range(k)]


def _layer_block(x: Tensor, d: Tensor, weight: bool, bias: bool) -> Tensor:
    """J_l J_l^T (K x K, float64) of one Linear from its stacked input X (N x in) and gradients D (K x N x out)."""
    k, n, width = d.shape
    fan_in = x.shape[1]
    block = torch.zeros((k, k), dtype=torch.float64, device=d.device)
    if weight:
        through_inputs = n * n * fan_in + k * n * n * width + k * k * n * width
        through_weights = k * n * fan_in * width + k * k * fan_in * width
        if through_inputs <= through_weights:
            products = torch.matmul(x @ x.T, d)  # E_t = (X X^T) D_t, so G[s, t] = <D_s, E_t>
            block += (d.reshape(k, -1) @ products.reshape(k, -1).T).double()
        else:
            rows = (d.transpose(1, 2) @ x).reshape(k, -1)  # this layer's K weight gradients only
            block += (rows @ rows.T).double()
    if bias:
        sums = d.sum(1)
        block += (sums @ sums.T).double()
    return block


def layer_gramian(values: Sequence[Tensor], layers: Sequence[Layer], representation: Tensor | None = None,
                  rep_grads: Tensor | None = None, batched: bool | None = None,
                  fallback: VmapFallback | None = None) -> Tensor:
    """G = J J^T (K x K, float64) of the shared parameters of ``layers``, from their captured calls.

    ``rep_grads`` (K x |z|) are the per-task gradients of ``representation`` when the objectives
    reach the trunk through it (then only the trunk is back-propagated); else the objectives are.
    """
    outputs = [out for layer in layers for _, out, _, _ in layer.calls]
    grads = output_gradients(values, outputs, representation, rep_grads, batched, fallback)
    k = len(values)
    gramian = None
    position = 0
    for layer in layers:
        xs, ds = [], []
        for x, out, _, _ in layer.calls:
            dtype = torch.promote_types(out.dtype, torch.float32)
            xs.append(x.detach().reshape(-1, x.shape[-1]).to(dtype))
            per_task = [torch.zeros_like(out) if grads[t][position] is None else grads[t][position] for t in range(k)]
            ds.append(torch.stack(per_task).reshape(k, -1, out.shape[-1]).to(dtype))
            position += 1
        block = _layer_block(torch.cat(xs), torch.cat(ds, dim=1), layer.weight, layer.bias)
        gramian = block if gramian is None else gramian + block
    return gramian
