"""Cutting a trunk into layers, for architectures that need layer-wise access.

Cross-stitch, hybrid, low-level supervision, cascade, interaction and multi-level PLE cut
the trunk at layer indices: the trunk must be an ``nn.Sequential`` or carry one as
``.layers`` (the ``mlp`` and ``lenet`` trunks do). Depth ``d`` means the output of the first ``d``
modules of that Sequential; for ``mlp`` with ``hidden=(64, 32)`` the modules are
``Flatten, Linear, ReLU, Linear, ReLU``, so depth 3 is the first hidden layer's output and
depth 5 the trunk's output. For ``lenet`` depth 8 is the flattened conv features; widths after
convolutions are read by a probe forward from the Sequential's ``example_shape``.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn


def as_sequential(trunk: nn.Module, architecture: str) -> nn.Sequential:
    """The trunk's layers as an ``nn.Sequential`` (the trunk itself or its ``.layers``)."""
    if isinstance(trunk, nn.Sequential):
        return trunk
    layers = getattr(trunk, "layers", None)
    if isinstance(layers, nn.Sequential):
        return layers
    raise TypeError(
        f"{architecture} cuts the trunk at layer indices and needs an nn.Sequential or a trunk with an "
        f".layers nn.Sequential (such as the 'mlp' trunk); got {type(trunk).__name__}"
    )


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def block_ends(layers: nn.Sequential) -> list[int]:
    """Depths that end a block: after a layer with parameters and its activation/dropout."""
    ends = []
    seen_parameters = False
    for depth in range(1, len(layers) + 1):
        seen_parameters = seen_parameters or _has_parameters(layers[depth - 1])
        if seen_parameters and (depth == len(layers) or _has_parameters(layers[depth])):
            ends.append(depth)
    return ends


def check_depth(depth: object, layers: nn.Sequential, field: str, allow_full: bool = True) -> int:
    """A depth validated against the Sequential, with an error naming the option."""
    top = len(layers) if allow_full else len(layers) - 1
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= top:
        raise ValueError(
            f"{field}: {depth!r} is not a layer index in 1..{top} of the trunk's {len(layers)} layers "
            f"({', '.join(type(m).__name__ for m in layers)}); block ends are {block_ends(layers)}"
        )
    return depth


def cut(layers: nn.Sequential, depths: Iterable[int]) -> list[nn.Sequential]:
    """The Sequential split at the given depths (sorted, unique); the stages share its modules."""
    bounds = [0, *sorted(set(depths))]
    if bounds[-1] != len(layers):
        bounds.append(len(layers))
    return [layers[a:b] for a, b in zip(bounds, bounds[1:])]


def probe_shape(layers: nn.Sequential, depth: int) -> tuple[int, ...] | None:
    """The per-example output shape after ``depth`` layers, by a forward of zeros through them.

    Needs ``layers.example_shape`` (the per-example input shape; the ``lenet`` trunk sets it); None without it.
    """
    shape = getattr(layers, "example_shape", None)
    if shape is None:
        return None
    was_training = layers.training
    layers.eval()
    try:
        with torch.no_grad():
            out = layers[:depth](torch.zeros(1, *shape))
    finally:
        layers.train(was_training)
    return tuple(out.shape[1:])


def width_at(layers: nn.Sequential, depth: int, field: str, flat: bool = False) -> int:
    """The feature width after the first ``depth`` layers.

    Read from the last layer with ``out_features``, else by a probe forward (see :func:`probe_shape`).
    ``flat=True`` gives the flattened size of any output (what a gate reads); otherwise the
    output must be (N, F) features.
    """
    for module in reversed(list(layers[:depth])):
        width = getattr(module, "out_features", None)
        if isinstance(width, int):
            return width
        if _has_parameters(module):
            break
    shape = probe_shape(layers, depth)
    if shape is not None and (flat or len(shape) == 1):
        return math.prod(shape)
    found = f" gives per-example shape {shape}" if shape is not None else ""
    raise ValueError(
        f"{field}: cannot tell the feature width at depth {depth}{found}; cut after a layer with out_features "
        "(an nn.Linear) or after a Flatten, whose output is a (N, F) tensor"
    )


def input_width(trunk: nn.Module, in_features: int | None, architecture: str) -> int:
    """Width of the flattened input, for gates that read the input (MMoE, PLE)."""
    if in_features is not None:
        return int(in_features)
    shape = getattr(trunk, "example_shape", None)
    if shape is not None:
        return math.prod(shape)
    for module in trunk.modules():
        if isinstance(module, nn.Linear):
            return module.in_features
        if _has_parameters(module) and not list(module.children()):
            break
    raise ValueError(
        f"{architecture}: the gates read the flattened input, whose width cannot be read from this trunk "
        "(its first layer is not nn.Linear and it has no example_shape); pass the option in_features "
        "(e.g. 784 for 28x28 images)"
    )


def output_width(trunk: nn.Module, field: str) -> int:
    """A trunk's output width: its ``out_features``, else read from its last layers."""
    width = getattr(trunk, "out_features", None)
    if isinstance(width, int):
        return width
    layers = as_sequential(trunk, field)
    return width_at(layers, len(layers), field)


def check_task_keys(names: Sequence[str], known: Sequence[str], field: str) -> None:
    """Refuse option keys that are not task names."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{field}: unknown task(s) {unknown}; the tasks are {list(known)}")


def head_width(head: nn.Module) -> int:
    """The input width of a head (its first ``nn.Linear``)."""
    for module in head.modules():
        if isinstance(module, nn.Linear):
            return module.in_features
    raise ValueError(f"cannot read the input width of head {type(head).__name__}; it has no nn.Linear")
