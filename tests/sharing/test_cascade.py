"""Cascade (Hashimoto et al. 2017): higher tasks read lower tasks' label embeddings; successive
regularization pulls shared parameters towards a snapshot."""
from __future__ import annotations

import pytest
import torch

from sharing._helpers import batch, mlp, tasks
from taskloom.sharing import build_cascade


def build(**options):
    torch.manual_seed(0)
    return build_cascade(mlp, tasks(), order=["quadrant", "sign", "level"], **options)


def test_higher_input_holds_the_lower_tasks_probability_weighted_embeddings():
    model = build(embedding_dim=5, depths={"quadrant": 3})
    x = batch().inputs
    outputs, read = model.head_inputs(x)
    quadrant = torch.softmax(outputs["quadrant"], -1) @ model.embeddings["quadrant"]
    p = torch.sigmoid(outputs["sign"])
    sign = torch.cat([1 - p, p], -1) @ model.embeddings["sign"]
    assert read["quadrant"].shape == (64, 16)
    assert torch.allclose(read["sign"][:, 12:], quadrant)
    assert torch.allclose(read["level"][:, 12:17], quadrant) and torch.allclose(read["level"][:, 17:], sign)
    assert torch.equal(read["level"][:, :12], model.features(x)[5])


def test_changing_the_lower_head_changes_the_higher_output_only_above():
    model = build()
    x = batch().inputs
    before = model(x)
    with torch.no_grad():
        model.heads["sign"].weight.add_(1.0)
    after = model(x)
    assert torch.equal(before["quadrant"], after["quadrant"])
    assert not torch.allclose(before["sign"], after["sign"])
    assert not torch.allclose(before["level"], after["level"])


def test_successive_regularization_is_delta_times_squared_distance_to_the_snapshot():
    model = build(successive=0.3)
    assert float(model.regularization().detach()) == 0.0
    shared = model.shared_parameters()
    with torch.no_grad():
        shared[0].add_(0.1)
    expected = 0.3 * 0.01 * shared[0].numel()
    assert torch.allclose(model.regularization(), torch.tensor(expected), rtol=1e-4)
    model.snapshot()
    assert float(model.regularization().detach()) == 0.0
    assert build().regularization() is None


def test_order_must_list_every_task_once():
    with pytest.raises(ValueError, match="cascade.order"):
        build_cascade(mlp, tasks(), order=["sign", "level"])
