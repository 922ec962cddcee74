"""The built-in trunks: LeNet is one Sequential that layer-cutting architectures can split."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taskloom.trunks import TRUNKS, LeNet


def test_lenet_layers_are_the_trunk_and_compute_the_lenet_function():
    torch.manual_seed(0)
    trunk = LeNet(28)
    x = torch.rand(4, 1, 28, 28)
    layers = trunk.layers
    assert isinstance(layers, nn.Sequential) and trunk.out_features == 50
    conv1, conv2, linear = layers[1], layers[4], layers[8]
    h = F.relu(F.max_pool2d(conv1(x), 2))
    h = F.relu(F.max_pool2d(conv2(h), 2))
    expected = F.relu(linear(h.flatten(1)))
    assert torch.allclose(trunk(x), expected, atol=1e-6)
    assert torch.equal(trunk(x), layers(x))
    assert torch.equal(trunk(x[:, 0]), trunk(x))


def test_lenet_example_shape_and_registration():
    trunk = TRUNKS.get("lenet")(image_size=28, channels=1)
    assert trunk.example_shape == (1, 28, 28) == trunk.layers.example_shape
    assert trunk.layers[:8](torch.zeros(2, 1, 28, 28)).shape == (2, 320)
