"""Cutting a Sequential trunk into stages at layer indices."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sharing._helpers import batch, mlp
from taskloom.sharing.layers import as_sequential, block_ends, cut, width_at


def test_block_ends_of_the_mlp_trunk_follow_each_activation():
    layers = as_sequential(mlp(), "test")
    assert block_ends(layers) == [3, 5]
    assert width_at(layers, 3, "x") == 16 and width_at(layers, 5, "x") == 12


def test_cut_stages_share_modules_and_compose_to_the_trunk():
    trunk = mlp()
    stages = cut(trunk.layers, [3])
    assert stages[0][1] is trunk.layers[1]
    x = batch().inputs
    assert torch.equal(stages[1](stages[0](x)), trunk(x))


def test_trunks_without_layers_are_refused_with_a_hint():
    with pytest.raises(TypeError, match="nn.Sequential"):
        as_sequential(nn.Linear(2, 2), "cross_stitch")
