"""Every architecture on the convolutional LeNet trunk: cuts at its layers, widths read after convolutions."""
from __future__ import annotations

import pytest
import torch

from taskloom.data.batch import Batch
from taskloom.losses import task_losses
from taskloom.sharing import ARCHITECTURES
from taskloom.sharing.layers import block_ends, width_at
from taskloom.task import Task
from taskloom.trunks import LeNet

CASES = [
    ("hard", {}), ("soft", {}), ("hybrid", {}), ("cross_stitch", {}), ("mmoe", {"num_experts": 2}), ("ple", {}),
    ("ple", {"num_levels": 2}), ("low_level", {"depths": {"left": 8}}), ("cascade", {"depths": {"left": 8}}),
    ("interaction", {}), ("adversarial", {"adversarial": ["right"]}),
    ("mtan", {}), ("mtan", {"depths": [4]}), ("dselect_k", {"num_experts": 2}), ("dselect_k", {"gate": "input"}),
]


def tasks() -> list[Task]:
    return [Task("left", "multiclass", 10), Task("right", "multiclass", 10)]


def batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 28, 28, generator=g)
    targets = {"left": torch.randint(0, 10, (16,), generator=g), "right": torch.randint(0, 10, (16,), generator=g)}
    return Batch(inputs=x, targets=targets, masks={}, weights={})


def test_lenet_block_ends_and_widths():
    layers = LeNet().layers
    assert block_ends(layers) == [4, 8, 10]
    assert width_at(layers, 8, "at") == 320 and width_at(layers, 10, "at") == 50
    assert width_at(layers, 4, "at", flat=True) == 10 * 12 * 12
    with pytest.raises(ValueError, match=r"\(10, 12, 12\).*Flatten"):
        width_at(layers, 4, "low_level.depths.left")


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_every_architecture_builds_and_steps_on_lenet(name, options):
    torch.manual_seed(0)
    model = ARCHITECTURES.get(name)(LeNet, tasks(), **options)
    b = batch()
    outputs = model(b.inputs)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {"left": (16, 10), "right": (16, 10)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = sum(task_losses(outputs, b, {t.name: t for t in tasks()}).values())
    penalty = model.regularization()
    (loss if penalty is None else loss + penalty).backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert [n for n, p in model.named_parameters() if torch.equal(p, before[n])] == []


def test_gates_read_the_flattened_image_and_low_taps_on_conv_maps_are_refused():
    model = ARCHITECTURES.get("mmoe")(LeNet, tasks(), num_experts=2)
    assert model.gates["left"].linear.in_features == 784
    with pytest.raises(ValueError, match="low_level.depths.left"):
        ARCHITECTURES.get("low_level")(LeNet, tasks(), depths={"left": 4})
