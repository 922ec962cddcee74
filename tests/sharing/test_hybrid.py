"""Hybrid sharing: a shared bottom (its representation) and soft-tied towers above the split."""
from __future__ import annotations

import pytest
import torch

from sharing._helpers import batch, mlp, tasks
from taskloom.sharing import build_hybrid, tie_penalty


def test_hybrid_shares_the_bottom_and_ties_the_towers():
    torch.manual_seed(0)
    model = build_hybrid(mlp, tasks(), split=3, strength=1.0)
    assert len(model.bottom) == 3 and all(len(t) == 2 for t in model.towers.values())
    x = batch().inputs
    rep = model.representation(x)
    assert rep.shape == (64, 16)
    for name, out in model.heads_forward(rep).items():
        assert torch.equal(out, model(x)[name])
    assert torch.allclose(model.regularization(), tie_penalty(list(model.towers.values())))
    with pytest.raises(ValueError, match="hybrid.split"):
        build_hybrid(mlp, tasks(), split=5)
