"""Per-layer-kind factors of the layer Gramian engine: Linear, Conv2d and affine normalization layers.

Each kind keeps, for its captured calls, per-task factors filled task by task (``fill``), from
which it gives its block J_l J_l^T of the Gramian (``block``) and writes the update w @ J_l
(``update``). The weight gradient of a call is the task's output gradient D_t contracted with
what the layer multiplied the weight by: the input (Linear, the per-example trick of Goodfellow
2015), the input's patches (Conv2d, computed by the convolution's own weight-gradient kernel), or
the normalized input x_hat recomputed from the captured input (BatchNorm, Ioffe & Szegedy 2015;
LayerNorm, Ba et al. 2016; GroupNorm, Wu & He 2018).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from taskloom.balancing.jacobian import write_gradients

if TYPE_CHECKING:
    from taskloom.balancing.layer_gramian import Layer

#: the (X X^T) D products of a Linear's Gramian block are made in this many slices of the tasks, so the
#: temporary is an eighth of the layer's factors (which are the engine's memory floor), not as large again
PRODUCT_CHUNKS = 8


def _zeros_where_missing(grads: Sequence[Tensor | None], shapes: Sequence[torch.Size], count: int, dtype: torch.dtype,
                         device: torch.device) -> list[Tensor]:
    return [torch.zeros((count, *shape), dtype=dtype, device=device) if g is None else g.to(dtype)
            for g, shape in zip(grads, shapes)]


class LinearRows:
    """One ``nn.Linear``'s per-task factors, in the cheaper of two contraction orders.

    Through the weight gradients (rows D_t^T X, K x out x in, cost K N in out + K^2 in out), or
    through X X^T (rows D_t, K x N x out, cost N^2 in + K N^2 out + K^2 N out). The bias adds the
    rows sum_i D_t[i] (K x out).
    """

    def __init__(self, layer: "Layer", k: int, inputs: list[Tensor] | None = None) -> None:
        x = layer.calls[0][0]
        self.dtype = torch.promote_types(layer.calls[0][1].dtype, torch.float32)
        if inputs is None:
            inputs = [c[0].detach().reshape(-1, c[0].shape[-1]).to(self.dtype) for c in layer.calls]
        self.x = inputs[0] if len(inputs) == 1 else torch.cat(inputs)  # no copy for one call
        self.layer, n, fan_in = layer, self.x.shape[0], self.x.shape[1]
        width = layer.module.weight.shape[0]
        self.shapes = [c[1].shape for c in layer.calls]
        through_inputs = n * n * fan_in + k * n * n * width + k * k * n * width
        through_weights = k * n * fan_in * width + k * k * fan_in * width
        self.by_weights = through_weights < through_inputs
        device = x.device
        self.rows = None
        if layer.weight:
            shape = (k, width, fan_in) if self.by_weights else (k, n, width)
            self.rows = torch.zeros(shape, dtype=self.dtype, device=device)
        self.sums = torch.zeros((k, width), dtype=self.dtype, device=device) if layer.bias else None

    def fill(self, tasks: slice, grads: Sequence[Tensor | None]) -> None:
        """Store the factors of tasks ``tasks`` from their gradients of each call's output (None: zero)."""
        count = tasks.stop - tasks.start
        parts = _zeros_where_missing(grads, self.shapes, count, self.dtype, self.x.device)
        pieces = [self._call_rows(g) for g in parts]
        d = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
        if self.rows is not None and self.by_weights and count == 1:  # one task (the sequential path): a plain mm
            torch.mm(d[0].T, self.x, out=self.rows[tasks.start])
        elif self.rows is not None and self.by_weights:
            torch.matmul(d.transpose(1, 2), self.x, out=self.rows[tasks])
        elif self.rows is not None:
            self.rows[tasks] = d
        if self.sums is not None:
            self.sums[tasks] = d.sum(1)

    @staticmethod
    def _call_rows(g: Tensor) -> Tensor:
        """A call's output gradients (tasks, ..., out) as (tasks, rows, out), the rows matching ``x``'s."""
        return g.reshape(g.shape[0], -1, g.shape[-1])

    def block(self) -> Tensor:
        """This layer's J_l J_l^T (K x K, float64)."""
        k = (self.rows if self.rows is not None else self.sums).shape[0]
        block = torch.zeros((k, k), dtype=torch.float64, device=self.x.device)
        if self.rows is not None:
            flat = self.rows.reshape(k, -1)
            if self.by_weights:
                block += (flat @ flat.T).double()
            else:  # E_t = (X X^T) D_t, so G[s, t] = <D_s, E_t>; E made for PRODUCT_CHUNKS slices of the tasks
                inner = self.x @ self.x.T
                step = -(-k // PRODUCT_CHUNKS)
                for start in range(0, k, step):
                    products = torch.matmul(inner, self.rows[start:start + step]).reshape(-1, flat.shape[1])
                    block[:, start:start + step] += (flat @ products.T).double()
        if self.sums is not None:
            block += (self.sums @ self.sums.T).double()
        return block

    def update(self, weights: Tensor) -> None:
        """Add sum_t w_t (task t's gradient) of this layer's shared parameters to their ``.grad``."""
        module = self.layer.module
        if self.rows is not None:
            w = weights.to(self.dtype)
            if self.by_weights:
                grad = torch.tensordot(w, self.rows, dims=1)
            else:
                grad = torch.tensordot(w, self.rows, dims=1).T @ self.x
            write_gradients([module.weight], [grad.reshape(module.weight.shape).to(module.weight.dtype)])
        if self.sums is not None:
            write_gradients([module.bias], [(weights.to(self.dtype) @ self.sums).to(module.bias.dtype)])


class _WeightRows:
    """Factors that are the per-task weight and bias gradients themselves (K x |weight|, K x |bias|)."""

    def __init__(self, layer: "Layer", k: int) -> None:
        self.layer = layer
        self.shapes = [c[1].shape for c in layer.calls]
        self.dtype = torch.promote_types(layer.calls[0][1].dtype, torch.float32)
        self.device = layer.calls[0][1].device
        module = layer.module
        self.rows = torch.zeros((k, module.weight.numel()), dtype=self.dtype, device=self.device) \
            if layer.weight else None
        self.sums = torch.zeros((k, module.bias.numel()), dtype=self.dtype, device=self.device) \
            if layer.bias else None

    def block(self) -> Tensor:
        """This layer's J_l J_l^T (K x K, float64)."""
        return sum((rows @ rows.T).double() for rows in (self.rows, self.sums) if rows is not None)

    def update(self, weights: Tensor) -> None:
        """Add sum_t w_t (task t's gradient) of this layer's shared parameters to their ``.grad``."""
        w = weights.to(self.dtype)
        for parameter, rows in ((self.layer.module.weight, self.rows), (self.layer.module.bias, self.sums)):
            if rows is not None:
                write_gradients([parameter], [(w @ rows).reshape(parameter.shape).to(parameter.dtype)])


def _same_padding(module: nn.Conv2d) -> tuple[list[int], list[int]]:
    """Left (top) and right (bottom) zero padding per spatial dimension, as ``F.conv2d`` applies it."""
    if module.padding == "valid":
        return [0, 0], [0, 0]
    if module.padding == "same":  # the odd extra pad goes after, as in F.conv2d(padding="same")
        totals = [d * (size - 1) for d, size in zip(module.dilation, module.kernel_size)]
        return [t // 2 for t in totals], [t - t // 2 for t in totals]
    return list(module.padding), list(module.padding)


def _padded_inputs(layer: "Layer", dtype: torch.dtype) -> tuple[list[Tensor], list[int]]:
    """Each call's input as (N, C, H, W), zero-padded beforehand where the padding is asymmetric; the padding left."""
    before, after = _same_padding(layer.module)
    inputs, padding = [], before
    for x, *_ in layer.calls:
        x = x.detach().to(dtype)
        x = x.unsqueeze(0) if x.dim() == 3 else x  # an unbatched (C, H, W) call
        if before != after:
            x = F.pad(x, (before[1], after[1], before[0], after[0]))
            padding = [0, 0]
        inputs.append(x)
    return inputs, padding


def conv_rows(layer: "Layer", k: int) -> "ConvRows | ConvPatchRows":
    """The cheaper factors of an ``nn.Conv2d``: its weight gradients, or its output gradients and input patches.

    With n = N H' W' output positions, F = in kh kw and out channels, as for ``nn.Linear``: through
    the weight gradients costs K n F out + K^2 F out, through the patches' products
    n^2 F + K n^2 out + K^2 n out (a deep layer on a small map: few positions, many weights).
    """
    module = layer.module
    n = sum(c[1].numel() // module.out_channels for c in layer.calls)
    fan_in, width = module.weight.shape[1:].numel(), module.out_channels
    through_patches = n * n * fan_in + k * n * n * width + k * k * n * width
    through_weights = k * n * fan_in * width + k * k * fan_in * width
    if through_weights <= through_patches or not layer.weight:
        return ConvRows(layer, k)
    return ConvPatchRows(layer, k)


class ConvPatchRows(LinearRows):
    """An ``nn.Conv2d`` as a Linear map of its input patches (``F.unfold``, n x in kh kw): rows are the D_t."""

    def __init__(self, layer: "Layer", k: int) -> None:
        module, dtype = layer.module, torch.promote_types(layer.calls[0][1].dtype, torch.float32)
        inputs, padding = _padded_inputs(layer, dtype)
        patches = [F.unfold(x, module.kernel_size, module.dilation, padding, module.stride).transpose(1, 2)
                   .reshape(-1, module.weight.shape[1:].numel()) for x in inputs]
        super().__init__(layer, k, patches)  # the same cost rule as conv_rows': through the patches

    @staticmethod
    def _call_rows(g: Tensor) -> Tensor:
        """(tasks, [N,] out, H', W') as (tasks, N H' W', out), in the patches' order."""
        g = g.unsqueeze(1) if g.dim() == 4 else g
        return g.flatten(3).transpose(2, 3).reshape(g.shape[0], -1, g.shape[2])


class ConvRows(_WeightRows):
    """One ``nn.Conv2d`` (groups 1, zero padding): rows are the per-task weight gradients (K x out x in kh kw).

    The weight gradient of all the tasks of a fill comes from one call of the convolution's
    weight-gradient kernel (``torch.nn.grad.conv2d_weight``) with the tasks folded into the
    output channels, so the unfolded input (N x in kh kw x L) is never held. The bias adds the
    rows sum over N, H', W' of D_t.
    """

    def __init__(self, layer: "Layer", k: int) -> None:
        super().__init__(layer, k)
        self.inputs, self.padding = _padded_inputs(layer, self.dtype)

    def fill(self, tasks: slice, grads: Sequence[Tensor | None]) -> None:
        """Add the factors of tasks ``tasks`` from their gradients of each call's output (None: zero)."""
        module, count = self.layer.module, tasks.stop - tasks.start
        for x, g in zip(self.inputs, grads):
            if g is None:
                continue
            g = g.to(self.dtype)
            g = g.unsqueeze(1) if g.dim() == 4 else g  # (tasks, N, out, H', W')
            if self.rows is not None:
                folded = g.transpose(0, 1).reshape(x.shape[0], count * module.out_channels, *g.shape[3:])
                weight = torch.nn.grad.conv2d_weight(x, (count * module.out_channels, *module.weight.shape[1:]),
                                                     folded, module.stride, self.padding, module.dilation)
                self.rows[tasks] += weight.reshape(count, -1)
            if self.sums is not None:
                self.sums[tasks] += g.sum((1, 3, 4))


class NormRows(_WeightRows):
    """An affine norm layer: weight gradient sum D_t * x_hat, bias gradient sum D_t, over all but the affine dims.

    x_hat is recomputed from the captured input with the statistics the forward used: BatchNorm's
    batch mean and biased variance over all dims but the channels (training, or no running
    stats) or its running stats at the forward (evaluation); LayerNorm's over ``normalized_shape``;
    GroupNorm's over each group. The weight is never divided out.
    """

    def __init__(self, layer: "Layer", k: int) -> None:
        super().__init__(layer, k)
        self.channels_last = isinstance(layer.module, nn.LayerNorm)  # the affine dims are the trailing ones
        self.inputs = [(x.detach(), state) for (x, *_), state in zip(layer.calls, layer.states)]

    def _reduce(self, t: Tensor) -> Tensor:
        """(tasks, *call shape) summed down to (tasks, |affine|)."""
        count = t.shape[0]
        if self.channels_last:
            width = self.layer.module.normalized_shape
            return t.reshape(count, -1, *width).sum(1).reshape(count, -1)
        return t.sum([1, *range(3, t.dim())])  # (tasks, N, C, *spatial): all but C

    def fill(self, tasks: slice, grads: Sequence[Tensor | None]) -> None:
        """Add the factors of tasks ``tasks`` from their gradients of each call's output (None: zero)."""
        for (x, state), g in zip(self.inputs, grads):
            if g is None:
                continue
            g = g.to(self.dtype)
            if self.rows is not None:  # x_hat recomputed for each fill, not held: it is as large as the input
                self.rows[tasks] += self._reduce(g * _normalized(self.layer.module, x.to(self.dtype), state))
            if self.sums is not None:
                self.sums[tasks] += self._reduce(g)


def _normalized(module: nn.Module, x: Tensor, state: Any) -> Tensor:
    """The layer's normalized input x_hat, with the statistics its forward used (``state``: running stats or None)."""
    with torch.no_grad():
        if isinstance(module, nn.LayerNorm):
            return F.layer_norm(x, module.normalized_shape, None, None, module.eps)
        if isinstance(module, nn.GroupNorm):
            return F.group_norm(x, module.num_groups, None, None, module.eps)
        if state is None:  # batch statistics
            return F.batch_norm(x, None, None, None, None, True, 0.0, module.eps)
        mean, var = state
        return F.batch_norm(x, mean.to(x.dtype), var.to(x.dtype), None, None, False, 0.0, module.eps)


def norm_state(module: nn.Module) -> Any:
    """What a norm layer's forward normalizes with, kept at the forward: BatchNorm's running stats in evaluation."""
    if isinstance(module, _BatchNorm) and not (module.training or module.running_mean is None):
        return module.running_mean.detach().clone(), module.running_var.detach().clone()
    return None


def kind_of(module: nn.Module, name: str) -> tuple[Callable[["Layer", int], Any] | None, str]:
    """The factor class of a shared layer and "", or None and the reason the layer Gramian engine cannot take it."""
    label = name or "<model>"
    forward = type(module).forward
    if forward is nn.Linear.forward:
        return LinearRows, ""
    if forward is nn.Conv2d.forward:
        if module.groups != 1:
            return None, (f"shared layer {label} is an nn.Conv2d with groups={module.groups} (only groups=1 is "
                          "supported)")
        if module.padding_mode != "zeros":
            return None, (f"shared layer {label} is an nn.Conv2d with padding_mode={module.padding_mode!r} (only "
                          "'zeros' is supported)")
        return conv_rows, ""
    if forward in (_BatchNorm.forward, nn.LayerNorm.forward, nn.GroupNorm.forward):
        return NormRows, ""
    return None, (f"shared layer {label} is a {type(module).__name__}, not an nn.Linear, nn.Conv2d or an affine "
                  "BatchNorm/LayerNorm/GroupNorm")
