"""Feature interaction (after Xia & Ding 2019): each tower fuses its features with the others' mean."""
from __future__ import annotations

import torch

from sharing._helpers import batch, mlp, tasks
from taskloom.sharing import build_interaction


def test_interaction_fuses_each_task_with_the_mean_of_the_others():
    torch.manual_seed(0)
    model = build_interaction(mlp, tasks(), at=3)
    x = batch().inputs
    low = {n: model.lower[n](x) for n in model.task_names}
    others = (low["quadrant"] + low["level"]) / 2
    fused = low["sign"] + model.fusion["sign"].linear(torch.cat([others, low["sign"] * others], -1))
    expected = model.heads["sign"](model.upper["sign"](fused))
    assert torch.allclose(model(x)["sign"], expected, atol=1e-6)
    single = build_interaction(mlp, tasks()[:1])
    assert len(single.fusion) == 0
