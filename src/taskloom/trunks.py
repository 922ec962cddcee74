"""Built-in trunks (shared feature extractors), registered by name. Each exposes ``out_features``."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from taskloom.registry import Registry

TRUNKS: Registry = Registry("trunk")


@TRUNKS.register("mlp", "fully connected layers with ReLU (and optional dropout)")
class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ImageBatch(nn.Module):
    """Adds the channel axis to a batch of single-channel images given as (N, H, W)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.unsqueeze(1) if x.dim() == 3 else x


@TRUNKS.register("lenet", "LeNet-style convolutional trunk of the MultiMNIST experiments (Sener & Koltun 2018)")
class LeNet(nn.Module):
    """Two 5x5 convolutions with max-pooling and a fully connected layer, for 1-channel images.

    ``layers`` is one ``nn.Sequential`` (ImageBatch, conv, pool, relu, conv, pool, relu, flatten,
    linear, relu), so layer-cutting architectures can split it: depth 4 is the first conv block's
    (N, 10, 12, 12) map, depth 8 the flattened (N, 320) conv features, depth 10 the output.
    ``example_shape`` lets them read widths after the convolutions by a probe forward.
    """

    def __init__(self, image_size: int = 28, channels: int = 1, width: int = 50) -> None:
        super().__init__()
        convolutions = [
            ImageBatch(),
            nn.Conv2d(channels, 10, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(10, 20, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
        ]
        with torch.no_grad():
            flat = nn.Sequential(*convolutions)(torch.zeros(1, channels, image_size, image_size)).shape[1]
        self.layers = nn.Sequential(*convolutions, nn.Linear(flat, width), nn.ReLU())
        self.layers.example_shape = (channels, image_size, image_size)
        self.example_shape = self.layers.example_shape
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
