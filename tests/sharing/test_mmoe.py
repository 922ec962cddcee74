"""MMoE (Ma et al. 2018) and CGC/PLE (Tang et al. 2020) against hard sharing and their gates."""
from __future__ import annotations

import copy

import pytest
import torch

from sharing._helpers import batch, mlp, tasks
from taskloom.sharing import MultiTaskModel, build_mmoe


def test_one_expert_reproduces_hard_sharing_with_the_same_weights():
    torch.manual_seed(0)
    model = build_mmoe(mlp, tasks(), num_experts=1)
    hard = MultiTaskModel(copy.deepcopy(model.experts[0]), heads=copy.deepcopy(dict(model.heads)))
    x = batch().inputs
    got, expected = model(x), hard(x)
    for name in expected:
        assert torch.equal(got[name], expected[name])


def test_constant_gates_over_identical_experts_reproduce_hard_sharing():
    torch.manual_seed(0)
    model = build_mmoe(mlp, tasks(), num_experts=3)
    for expert in model.experts[1:]:
        expert.load_state_dict(model.experts[0].state_dict())
    with torch.no_grad():
        for gate in model.gates.values():
            gate.linear.weight.zero_()
            gate.linear.bias.fill_(0.3)
    hard = MultiTaskModel(copy.deepcopy(model.experts[0]), heads=copy.deepcopy(dict(model.heads)))
    x = batch().inputs
    for name, out in hard(x).items():
        assert torch.allclose(model(x)[name], out, atol=1e-6)


def test_gates_are_softmax_weights_per_row():
    model = build_mmoe(mlp, tasks(), num_experts=4)
    weights = model.gates["sign"](batch().inputs)
    assert weights.shape == (64, 4) and torch.allclose(weights.sum(1), torch.ones(64))


def test_gate_width_must_be_given_when_the_trunk_does_not_start_with_linear():
    conv = lambda: torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten())  # noqa: E731
    with pytest.raises(ValueError, match="in_features"):
        build_mmoe(conv, tasks())
