"""Shared helpers of the gradient-level balancing tests: random gradient matrices and a tiny 3-task model."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskloom.sharing.hard import MultiTaskModel
from taskloom.trunks import MLP

GRADIENT_METHODS = ["mgda", "mgda_ub", "pcgrad", "gradvac", "cagrad", "nashmtl", "imtl_g", "graddrop",
                    "alignedmtl", "upgrad", "dbmtl", "fairgrad", "excessmtl", "config"]
TASKS = ["a", "b", "c"]


def random_grads(k: int, p: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """A K x P matrix of gradients with a shared component, so some pairs conflict and some agree."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.randn(1, p, generator=generator, dtype=dtype)
    return 0.5 * common + torch.randn(k, p, generator=generator, dtype=dtype)


def make_model(seed: int = 0, features: int = 5, hidden: int = 8) -> MultiTaskModel:
    torch.manual_seed(seed)
    heads = {name: nn.Linear(hidden, 1) for name in TASKS}
    return MultiTaskModel(MLP(features, hidden=(hidden, hidden)), heads=heads)


def make_data(seed: int = 0, rows: int = 32, features: int = 5) -> tuple[Tensor, dict[str, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=generator)
    targets = {name: torch.randn(rows, 1, generator=generator) + i for i, name in enumerate(TASKS)}
    return x, targets


def losses_from(outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: F.mse_loss(outputs[name], targets[name]) for name in targets}
