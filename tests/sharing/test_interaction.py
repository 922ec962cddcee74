"""Interaction between task towers (Xia & Ding 2019): a tower's predictions enter the later towers' upper
layer (the default), or, as an extension, each tower fuses its features with the others' mean."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sharing._helpers import batch, mlp, tasks
from taskloom.sharing import FeatureInteraction, PredictionInteraction, build_interaction

ORDER = ["quadrant", "sign", "level"]


def build(**options):
    torch.manual_seed(0)
    return build_interaction(mlp, tasks(), at=3, order=ORDER, **options)


def test_predictions_are_the_default_and_enter_the_upper_layer_as_label_embeddings():
    model = build(embedding_dim=5)
    assert isinstance(model, PredictionInteraction)
    x = batch().inputs
    outputs, read = model.upper_inputs(x)
    quadrant = torch.softmax(outputs["quadrant"], -1) @ model.embeddings["quadrant"]
    p = torch.sigmoid(outputs["sign"])
    sign = torch.cat([1 - p, p], -1) @ model.embeddings["sign"]
    assert torch.equal(read["quadrant"], model.lower["quadrant"](x))  # the first task reads nothing else
    assert torch.allclose(read["sign"], torch.cat([model.lower["sign"](x), quadrant], -1))
    assert torch.allclose(read["level"], torch.cat([model.lower["level"](x), quadrant, sign], -1))
    expected = model.heads["level"](model.upper["level"](read["level"]))
    assert torch.allclose(outputs["level"], expected)
    assert model.upper["level"][0].in_features == 16 + 10  # the hidden layer's width plus two embeddings


def test_changing_a_task_head_changes_the_input_of_the_later_towers_only():
    model = build()
    x = batch().inputs
    before_out, before_read = model.upper_inputs(x)
    with torch.no_grad():
        model.heads["sign"].weight.add_(1.0)
    after_out, after_read = model.upper_inputs(x)
    assert torch.equal(before_out["quadrant"], after_out["quadrant"])  # earlier in the order: untouched
    assert torch.equal(before_read["sign"], after_read["sign"])  # its own upper input is its own features
    assert not torch.allclose(before_read["level"], after_read["level"])
    assert not torch.allclose(before_out["level"], after_out["level"])


def test_raw_distributions_as_in_the_paper():
    model = build(embedding_dim=None)
    x = batch().inputs
    outputs, read = model.upper_inputs(x)
    assert len(model.embeddings) == 0
    p = torch.sigmoid(outputs["sign"])
    raw = torch.cat([model.lower["level"](x), torch.softmax(outputs["quadrant"], -1), 1 - p, p], -1)
    assert torch.allclose(read["level"], raw)


def test_cut_at_the_top_widens_the_head():
    torch.manual_seed(0)
    model = build_interaction(mlp, tasks(), at=5, embedding_dim=3)
    assert len(model.upper["level"]) == 0 and model.heads["level"].in_features == 12 + 6
    assert model(batch().inputs)["level"].shape == (64, 1)


def test_options_are_validated():
    with pytest.raises(ValueError, match="interaction.order"):
        build_interaction(mlp, tasks(), order=["sign", "level"])
    with pytest.raises(ValueError, match="interaction.mode"):
        build_interaction(mlp, tasks(), mode="both")
    with pytest.raises(ValueError, match="starts with ReLU"):
        build_interaction(mlp, tasks(), at=2)  # after the first nn.Linear, before its ReLU
    with pytest.raises(ValueError, match="embedding_dim"):
        build_interaction(mlp, tasks(), embedding_dim=0)


def test_feature_mode_fuses_each_task_with_the_mean_of_the_others():
    torch.manual_seed(0)
    model = build_interaction(mlp, tasks(), at=3, mode="features")
    assert isinstance(model, FeatureInteraction)
    x = batch().inputs
    low = {n: model.lower[n](x) for n in model.task_names}
    others = (low["quadrant"] + low["level"]) / 2
    fused = low["sign"] + model.fusion["sign"].linear(torch.cat([others, low["sign"] * others], -1))
    expected = model.heads["sign"](model.upper["sign"](fused))
    assert torch.allclose(model(x)["sign"], expected, atol=1e-6)
    single = build_interaction(mlp, tasks()[:1], mode="features")
    assert len(single.fusion) == 0 and isinstance(single.heads["sign"], nn.Linear)
