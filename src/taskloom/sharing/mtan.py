"""Multi-task attention network (Liu, Johns & Davison 2019, "End-to-end multi-task learning with attention",
CVPR 2019): a shared trunk of global feature blocks and, per task, soft-attention modules that mask each block's
shared features; a task's attended features feed its next attention module and, at the top, its head."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from taskloom.sharing.layers import as_sequential, block_ends, check_depth, cut, input_width
from taskloom.sharing.parameters import Reach, ReachSplit, params
from taskloom.task import Task


def _pointwise(in_channels: int, out_channels: int, spatial: bool) -> nn.Module:
    """A 1x1 convolution on (N, C, H, W) maps, a linear map on (N, F) features."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1) if spatial else nn.Linear(in_channels, out_channels)


class AttentionMask(nn.Module):
    """a = sigmoid(h(relu(g(input)))): a task's soft mask over one block's shared features (Liu et al. 2019)."""

    def __init__(self, in_channels: int, channels: int, spatial: bool) -> None:
        super().__init__()
        self.g = _pointwise(in_channels, channels, spatial)
        self.h = _pointwise(channels, channels, spatial)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.h(torch.relu(self.g(x))))


class Adapter(nn.Module):
    """f_j: a task's attended features of block j brought to block j+1's shape (3x3 conv + ReLU + max-pool on
    conv maps, linear + ReLU on flat features), to be concatenated with that block's shared features."""

    def __init__(self, source: tuple[int, ...], target: tuple[int, ...]) -> None:
        super().__init__()
        if len(source) == 3:
            self.layers = nn.Sequential(nn.Conv2d(source[0], target[0], kernel_size=3, padding=1), nn.ReLU(),
                                        nn.AdaptiveMaxPool2d(tuple(target[1:])))
        else:
            self.layers = nn.Sequential(nn.Linear(source[0], target[0]), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MTAN(ReachSplit):
    """Shared stages (the trunk cut at the attention depths) plus per-task attention masks, adapters and heads.

    Task t's features at attention point j are a_t^j * s_j, with s_j the shared features there and
    a_t^j = mask_t^j([s_j, f_t^{j-1}(task t's features at point j-1)]) (only s_1 at the first point).
    Layers above the last point are shared and run on each task's attended features before its head.
    Two simplifications of the paper: the mask reads and multiplies the same block output (the paper reads
    the block's middle features), and g and h have no batch norm, so every mask is a pure function of its input.
    """

    adversarial_input = None

    def __init__(self, stages: Sequence[nn.Module], top: nn.Module, masks: dict[str, Sequence[nn.Module]],
                 adapters: dict[str, Sequence[nn.Module]], heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(list(stages))
        self.top = top
        self.masks = nn.ModuleDict({n: nn.ModuleList(list(m)) for n, m in masks.items()})
        self.adapters = nn.ModuleDict({n: nn.ModuleList(list(adapters[n])) for n in masks})
        self.heads = nn.ModuleDict({n: heads[n] for n in masks})
        self.task_names = list(self.masks)
        self.shapes: list[tuple[int, ...]] = []  # per-example shapes at the attention points (set by build_mtan)
        self.head_width = 0

    def attention(self, inputs: Any) -> tuple[list[Tensor], dict[str, list[Tensor]], dict[str, list[Tensor]]]:
        """The shared features at each attention point, every task's masks there, and its attended features."""
        shared: list[Tensor] = []
        x = inputs
        for stage in self.stages:
            x = stage(x)
            shared.append(x)
        masks: dict[str, list[Tensor]] = {}
        attended: dict[str, list[Tensor]] = {}
        for n in self.task_names:
            masks[n], attended[n] = [], []
            for j, s in enumerate(shared):
                mask_input = s if j == 0 else torch.cat([s, self.adapters[n][j - 1](attended[n][-1])], dim=1)
                a = self.masks[n][j](mask_input)
                masks[n].append(a)
                attended[n].append(a * s)
        return shared, masks, attended

    def task_features(self, inputs: Any) -> dict[str, Tensor]:
        """Each task's features as its head reads them (the shared top layers over its last attended features)."""
        _, _, attended = self.attention(inputs)
        return {n: self.top(attended[n][-1]) for n in self.task_names}

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        return {n: self.heads[n](f) for n, f in self.task_features(inputs).items()}

    def parameter_reach(self) -> Reach:
        groups: Reach = [(params(self.stages, self.top), frozenset(self.task_names))]
        return groups + [(params(self.masks[n], self.adapters[n], self.heads[n]), frozenset([n]))
                         for n in self.task_names]

    def attach_task(self, task: Task) -> None:
        """New attention masks, adapters and a head for ``task`` over the existing shared stages."""
        if not self.shapes:
            raise ValueError("add_task: this MTAN was not built by build_mtan and does not know its block shapes")
        self.masks[task.name] = nn.ModuleList(attention_masks(self.shapes))
        self.adapters[task.name] = nn.ModuleList(adapters(self.shapes))
        self.heads[task.name] = task.build_head(self.head_width)
        self.task_names.append(task.name)

    def detach_task(self, name: str) -> None:
        """Drop a task's masks, adapters and head; the shared stages and the other tasks are untouched."""
        self.drop_task(name, self.masks, self.adapters, self.heads)


def attention_masks(shapes: Sequence[tuple[int, ...]]) -> list[AttentionMask]:
    """One task's masks: the first reads the shared features, later ones those and the adapted task features."""
    return [AttentionMask(s[0] if j == 0 else 2 * s[0], s[0], len(s) == 3) for j, s in enumerate(shapes)]


def adapters(shapes: Sequence[tuple[int, ...]]) -> list[Adapter]:
    """One task's adapters from each attention point's shape to the next one's."""
    return [Adapter(a, b) for a, b in zip(shapes, shapes[1:])]


def _shapes(layers: nn.Sequential, depths: Sequence[int], trunk: nn.Module) -> list[tuple[int, ...]]:
    """Per-example output shapes at ``depths`` by one probe forward of zeros (in eval mode)."""
    example = getattr(layers, "example_shape", None) or getattr(trunk, "example_shape", None)
    if example is None:
        example = (input_width(trunk, None, "model.options (mtan)"),)
    was_training = layers.training
    layers.eval()
    shapes = []
    try:
        with torch.no_grad():
            x = torch.zeros(1, *example)
            done = 0
            for d in depths:
                x = layers[done:d](x)
                done = d
                shapes.append(tuple(x.shape[1:]))
    finally:
        layers.train(was_training)
    return shapes


def default_depths(layers: nn.Sequential, trunk: nn.Module) -> list[int]:
    """Block ends (before a closing Flatten); only those with conv maps when the trunk has any."""
    ends = sorted({d - 1 if isinstance(layers[d - 1], nn.Flatten) and d > 1 else d for d in block_ends(layers)})
    shapes = _shapes(layers, ends, trunk)
    spatial = [d for d, s in zip(ends, shapes) if len(s) == 3]
    return spatial or ends


def build_mtan(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task], depths: Sequence[int] | None = None
               ) -> MTAN:
    """MTAN over the trunk's ``nn.Sequential`` with attention after the layer indices ``depths`` (default: every
    block end, only the convolutional ones on a conv trunk such as ``lenet``)."""
    trunk = trunk_factory()
    layers = as_sequential(trunk, "model.options (mtan)")
    if depths is None:
        depths = default_depths(layers, trunk)
    if isinstance(depths, (str, bytes)) or not isinstance(depths, Sequence) or not depths:
        raise ValueError(f"model.options.depths: give a non-empty list of layer indices, got {depths!r}")
    depths = [check_depth(d, layers, "model.options.depths") for d in depths]
    if len(set(depths)) != len(depths) or sorted(depths) != depths:
        raise ValueError(f"model.options.depths: give increasing, distinct layer indices, got {depths}")
    shapes = _shapes(layers, depths, trunk)
    kinds = {len(s) for s in shapes}
    if not kinds <= {1, 3} or len(kinds) > 1:
        raise ValueError(f"model.options.depths: the features at {depths} have per-example shapes {shapes}; "
                         "attention needs all conv maps (C, H, W) or all flat features (F,): pick depths of one kind")
    stages = cut(layers, depths)
    top = stages.pop() if len(stages) > len(depths) else nn.Identity()
    was_training = layers.training
    layers.eval()
    with torch.no_grad():
        top_shape = top(torch.zeros(1, *shapes[-1])).shape[1:]
    layers.train(was_training)
    if len(top_shape) > 1:  # the trunk ends on conv maps: the heads read them flattened
        top = nn.Sequential(top, nn.Flatten())
    width = math.prod(top_shape)
    heads = {t.name: t.build_head(int(width)) for t in tasks}
    model = MTAN(stages, top, {t.name: attention_masks(shapes) for t in tasks},
                 {t.name: adapters(shapes) for t in tasks}, heads)
    model.shapes, model.head_width = [tuple(s) for s in shapes], int(width)
    return model
