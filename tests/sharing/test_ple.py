"""CGC/PLE (Tang et al. 2020): one level with shared experts only is MMoE; levels follow the cuts."""
from __future__ import annotations

import pytest
import torch

from sharing._helpers import batch, mlp, tasks
from taskloom.sharing import build_mmoe, build_ple


def test_cgc_with_only_shared_experts_and_one_level_is_mmoe():
    torch.manual_seed(0)
    ple = build_ple(mlp, tasks(), num_levels=1, shared_experts=2, task_experts=0)
    mmoe = build_mmoe(mlp, tasks(), num_experts=2)
    level = ple.levels[0]
    mmoe.experts.load_state_dict(level.shared.state_dict())
    mmoe.gates.load_state_dict(level.gates.state_dict())
    mmoe.heads.load_state_dict(ple.heads.state_dict())
    x = batch().inputs
    for name, out in ple(x).items():
        assert torch.equal(mmoe(x)[name], out)


def test_ple_levels_follow_the_cuts():
    model = build_ple(mlp, tasks(), num_levels=2, cuts=[3])
    assert len(model.levels) == 2 and model.levels[1].shared_gate is None
    assert model.levels[0].gates["sign"].linear.in_features == 8
    assert model.levels[1].gates["sign"].linear.in_features == 16
    with pytest.raises(ValueError, match="ple.cuts"):
        build_ple(mlp, tasks(), num_levels=3, cuts=[3, 3])
