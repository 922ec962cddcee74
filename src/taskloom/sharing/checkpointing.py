"""Activation checkpointing of a shared trunk (Chen, Xu, Zhang & Guestrin 2016, "Training deep nets with
sublinear memory cost"): keep only each segment's input during the forward pass, recompute the segment's
activations during backward.

A Sequential trunk (``mlp``, ``lenet`` or an ``nn.Sequential``) of B blocks (a layer with parameters and the
normalization, activation and dropout after it) is checkpointed in about sqrt(B) segments of consecutive
blocks: the forward keeps only the segments' inputs, and a backward recomputes one segment at a time
(Chen et al.'s sqrt(n) schedule); any other trunk is one segment. ``torch.utils.checkpoint`` runs non-reentrant
(``use_reentrant=False``: it works with ``torch.autograd.grad`` and with the repeated backward passes of
the gradient engine) and restores the random state, so dropout draws the same masks when recomputed.
A recomputation runs the segment's forward again in training mode; :func:`buffers_kept` restores the
segment's buffers afterwards, so batch normalization's running statistics are updated once per forward,
however many backward passes recompute it. Only training forwards with gradients are checkpointed.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from taskloom.trunks import LeNet, MLP

#: architectures that run no shared trunk, and why checkpointing does not apply to them
NO_SHARED_TRUNK = {
    "SoftSharing": "each task has its own tower (tied by a penalty), there is no shared trunk to checkpoint",
    "CrossStitchNetwork": "each task has its own tower (mixed by cross-stitch units), there is no shared trunk",
    "FeatureInteraction": "each task has its own tower, there is no shared trunk to checkpoint",
    "PredictionInteraction": "each task has its own tower, there is no shared trunk to checkpoint",
    "PLE": "its experts are called level by level through gates; checkpointing them is not implemented",
    "MTAN": "its trunk is cut into stages whose outputs the attention masks read; checkpointing them is not "
            "implemented",
}

#: the same, by registered architecture name (what a config is checked against)
UNCHECKPOINTED = {"soft": NO_SHARED_TRUNK["SoftSharing"], "cross_stitch": NO_SHARED_TRUNK["CrossStitchNetwork"],
                  "interaction": NO_SHARED_TRUNK["FeatureInteraction"], "ple": NO_SHARED_TRUNK["PLE"],
                  "mtan": NO_SHARED_TRUNK["MTAN"]}


class buffers_kept:
    """Restore every buffer of ``modules`` (batch normalization's running statistics) when the block ends.

    Reusable: a checkpoint enters it at each recomputation (once per backward pass through the segment).
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        self.saved: list[tuple[Tensor, Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [(buffer, buffer.detach().clone()) for module in self.modules for buffer in module.buffers()]

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for buffer, value in self.saved:
                buffer.copy_(value)
        self.saved = []


def _run(modules: Sequence[nn.Module], x: Any) -> Any:
    for module in modules:
        x = module(x)
    return x


def _checkpointed(function: Callable[[Any], Any], modules: Sequence[nn.Module], x: Any) -> Any:
    """``function(x)`` checkpointed: recomputed in backward with the same random draws, buffers kept."""
    return checkpoint(function, x, use_reentrant=False, preserve_rng_state=True,
                      context_fn=lambda: (contextlib.nullcontext(), buffers_kept(modules)))


def _sequence_of(trunk: nn.Module) -> nn.Sequential | None:
    """The Sequential that computes the trunk: the trunk itself, or the ``.layers`` of ``mlp`` and ``lenet``."""
    if isinstance(trunk, nn.Sequential) and type(trunk).forward is nn.Sequential.forward:
        return trunk
    if type(trunk) in (MLP, LeNet):  # their forward is layers(x) and nothing else
        return trunk.layers
    return None


#: layers that belong to the block of the layer before them (they normalize its output)
NORMALIZATIONS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d,
                  nn.InstanceNorm2d, nn.InstanceNorm3d)


def trunk_blocks(layers: nn.Sequential) -> list[list[nn.Module]]:
    """The layers grouped in blocks: a block starts at each layer with parameters other than a normalization."""
    blocks: list[list[nn.Module]] = []
    for layer in layers:
        starts_block = any(True for _ in layer.parameters()) and not isinstance(layer, NORMALIZATIONS)
        if not blocks or (starts_block and any(any(True for _ in m.parameters()) for m in blocks[-1])):
            blocks.append([])
        blocks[-1].append(layer)
    return blocks


def trunk_segments(trunk: nn.Module) -> list[list[nn.Module]]:
    """The segments a trunk is checkpointed in: ceil(sqrt(B)) runs of consecutive blocks when a Sequential of
    B blocks computes it (the forward keeps about sqrt(B) segment inputs, a backward recomputes about sqrt(B)
    blocks at a time), else the whole trunk as one segment."""
    layers = _sequence_of(trunk)
    if layers is None:
        return [[trunk]]
    blocks = trunk_blocks(layers)
    count = math.ceil(math.sqrt(len(blocks)))
    bounds = [len(blocks) * i // count for i in range(count + 1)]
    return [[layer for block in blocks[start:stop] for layer in block] for start, stop in zip(bounds, bounds[1:])]


def checkpointing_active(module: nn.Module, enabled: bool) -> bool:
    """Checkpoint only when asked, in training mode and with gradients enabled."""
    return enabled and module.training and torch.is_grad_enabled()


def run_trunk(trunk: nn.Module, x: Any, enabled: bool) -> Any:
    """``trunk(x)``, checkpointed segment by segment when ``enabled`` (and training with gradients)."""
    if not checkpointing_active(trunk, enabled):
        return trunk(x)
    for segment in trunk_segments(trunk):
        x = _checkpointed(lambda inputs, modules=segment: _run(modules, inputs), segment, x)
    return x


def run_layer_outputs(trunk: nn.Module, x: Any, enabled: bool) -> list[Tensor]:
    """A layered trunk's ``layer_outputs(x)`` (sequence trunks), checkpointed as one segment when ``enabled``."""
    if not checkpointing_active(trunk, enabled):
        return trunk.layer_outputs(x)
    return list(_checkpointed(lambda inputs: tuple(trunk.layer_outputs(inputs)), [trunk], x))


def enable_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn activation checkpointing of ``model``'s shared trunk on (or off); returns ``model``.

    Applies to architectures that declare ``checkpointable`` (hard, hybrid, low-level, cascade, MMoE, DSelect-k and
    their adversarial variants); any other is refused, naming it and why.
    """
    if not getattr(model, "checkpointable", False):
        name = type(model).__name__
        reason = NO_SHARED_TRUNK.get(name, "it does not call a shared trunk through taskloom's checkpointing")
        raise ValueError(f"model.checkpointing: {name} cannot checkpoint activations: {reason}. Use an architecture "
                         "with a shared trunk (hard, hybrid, low_level, cascade, mmoe) or set model.checkpointing: "
                         "false")
    model.checkpointing = bool(enabled)
    return model
