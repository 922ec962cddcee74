"""MTAN (Liu, Johns & Davison 2019): all-ones masks reduce it to hard sharing, masks lie in (0, 1), each task's
output depends only on its own attention modules and the shared trunk, and it learns on MultiMNIST-shaped data."""
from __future__ import annotations

import pytest
import torch

from taskloom.data.batch import Batch
from taskloom.losses import task_losses
from taskloom.sharing import ARCHITECTURES, MTAN
from taskloom.task import Task
from taskloom.trunks import MLP, LeNet


def tasks() -> list[Task]:
    return [Task("left", "multiclass", 10), Task("right", "multiclass", 10)]


def images(n: int = 16, size: int = 36, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def build(trunk, options=None) -> MTAN:
    torch.manual_seed(0)
    return ARCHITECTURES.get("mtan")(lambda: trunk, tasks(), **(options or {}))


def open_every_mask(model: MTAN) -> None:
    """h's weights 0 and bias 50: sigmoid(50) is 1.0 in float32, so every mask is exactly all ones."""
    with torch.no_grad():
        for masks in model.masks.values():
            for mask in masks:
                mask.h.weight.zero_()
                mask.h.bias.fill_(50.0)


def test_default_attention_points_are_lenets_conv_blocks():
    model = build(LeNet(image_size=36))
    _, masks, _ = model.attention(images(2))
    assert [tuple(a.shape) for a in masks["left"]] == [(2, 10, 16, 16), (2, 20, 6, 6)]
    assert model.masks["left"][1].g.in_channels == 2 * 20  # [shared features, adapted previous task features]


@pytest.mark.parametrize("trunk", [LeNet(image_size=36), MLP(36 * 36, hidden=(16, 12))], ids=["lenet", "mlp"])
def test_all_ones_masks_reduce_mtan_to_hard_sharing(trunk):
    model = build(trunk)
    open_every_mask(model)
    x = images() if isinstance(trunk, LeNet) else images().flatten(1)
    _, masks, _ = model.attention(x)
    assert all(bool((a == 1).all()) for per_task in masks.values() for a in per_task)
    shared = trunk(x)
    outputs = model(x)
    for name, features in model.task_features(x).items():
        assert torch.equal(features, shared)
        assert torch.equal(outputs[name], model.heads[name](shared))


def test_masks_lie_strictly_between_zero_and_one_and_differ_by_task():
    model = build(LeNet(image_size=36))
    _, masks, attended = model.attention(images())
    for per_task in masks.values():
        for a in per_task:
            assert bool((a > 0).all() and (a < 1).all())
    assert not torch.equal(masks["left"][0], masks["right"][0])
    shared, _, _ = model.attention(images())
    assert torch.equal(attended["left"][1], masks["left"][1] * shared[1])  # the mask multiplies the shared features


def test_a_tasks_output_does_not_depend_on_another_tasks_attention():
    model = build(LeNet(image_size=36))
    out = model(images())["left"].sum()
    own = list(model.masks["left"].parameters()) + list(model.adapters["left"].parameters())
    other = list(model.masks["right"].parameters()) + list(model.adapters["right"].parameters()) + list(
        model.heads["right"].parameters())
    grads = torch.autograd.grad(out, own + other + list(model.stages.parameters()), allow_unused=True)
    own_grads, other_grads = grads[: len(own)], grads[len(own): len(own) + len(other)]
    assert all(g is None or bool((g == 0).all()) for g in other_grads)
    assert all(g is not None and bool(g.abs().sum() > 0) for g in own_grads)
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads[len(own) + len(other):])
    assert {id(p) for p in model.task_parameters("left")} == {id(p) for p in own + list(
        model.heads["left"].parameters())}


def test_trains_on_tiny_multimnist_shaped_data():
    g = torch.Generator().manual_seed(1)
    targets = {"left": torch.randint(0, 10, (32,), generator=g), "right": torch.randint(0, 10, (32,), generator=g)}
    x = 0.1 * images(32)  # each digit's class is the grey level of a patch in its half of the composite
    x[:, :, 10:26, 2:16] += targets["left"].view(-1, 1, 1, 1) / 10
    x[:, :, 10:26, 20:34] += targets["right"].view(-1, 1, 1, 1) / 10
    batch = Batch(inputs=x, targets=targets, masks={}, weights={})
    model = build(LeNet(image_size=36))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    task_map = {t.name: t for t in tasks()}
    first = None
    for _ in range(30):
        optimizer.zero_grad()
        loss = sum(task_losses(model(batch.inputs), batch, task_map).values())
        loss.backward()
        optimizer.step()
        first = float(loss.detach()) if first is None else first
    with torch.no_grad():
        final = float(sum(task_losses(model(batch.inputs), batch, task_map).values()))
    assert final < 0.5 * first


def test_bad_depths_are_refused_naming_the_option():
    with pytest.raises(ValueError, match=r"model\.options\.depths.*one kind"):
        build(LeNet(), {"depths": [4, 8]})  # a conv map and flat features
    with pytest.raises(ValueError, match=r"model\.options\.depths.*increasing"):
        build(LeNet(), {"depths": [7, 4]})
    with pytest.raises(ValueError, match=r"model\.options\.depths"):
        build(LeNet(), {"depths": [99]})
    with pytest.raises(ValueError, match=r"model\.options\.depths.*non-empty"):
        build(LeNet(), {"depths": []})


def test_a_trunk_ending_on_conv_maps_feeds_the_heads_flattened():
    trunk = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3),
                                torch.nn.ReLU())
    trunk.example_shape = (1, 6, 6)
    model = build(trunk)
    assert [tuple(a.shape) for a in model.attention(torch.rand(3, 1, 6, 6))[1]["left"]] == [(3, 4, 6, 6), (3, 2, 4, 4)]
    assert model(torch.rand(3, 1, 6, 6))["left"].shape == (3, 10) and model.heads["left"].in_features == 2 * 4 * 4
