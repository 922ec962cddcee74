"""Every gradient-level method as a pure function of the K x P per-task gradient matrix, by name.

``aggregate(name, grads, **options)`` returns the P-vector update direction; stateful
methods (gradvac, nashmtl, dbmtl, excessmtl, graddrop's RNG) take their state as an option object
(``state=GradVacState()``, ``state=ExcessMTLState()``, ``generator=...``) that carries it from one call to the next.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from taskloom.balancing.alignedmtl import alignedmtl
from taskloom.balancing.cagrad import cagrad
from taskloom.balancing.config_grad import config_grad
from taskloom.balancing.dbmtl import dbmtl
from taskloom.balancing.excessmtl import excessmtl
from taskloom.balancing.fairgrad import fairgrad
from taskloom.balancing.graddrop import graddrop
from taskloom.balancing.gradvac import gradvac
from taskloom.balancing.imtl import imtl_g
from taskloom.balancing.mgda import mgda
from taskloom.balancing.nashmtl import nashmtl
from taskloom.balancing.pcgrad import pcgrad
from taskloom.balancing.upgrad import upgrad
from taskloom.registry import Registry

AGGREGATORS: Registry[Callable[..., Tensor]] = Registry("gradient aggregator")
AGGREGATORS.add("mgda", mgda, "min-norm convex combination (Sener & Koltun 2018)")
AGGREGATORS.add("mgda_ub", mgda, "MGDA on representation gradients (Sener & Koltun 2018)")
AGGREGATORS.add("pcgrad", pcgrad, "projecting conflicting gradients (Yu et al. 2020)")
AGGREGATORS.add("gradvac", gradvac, "gradient vaccine (Wang et al. 2021)")
AGGREGATORS.add("cagrad", cagrad, "conflict-averse gradient descent (Liu et al. 2021)")
AGGREGATORS.add("nashmtl", nashmtl, "Nash bargaining weights (Navon et al. 2022)")
AGGREGATORS.add("imtl_g", imtl_g, "impartial MTL, gradient part (Liu et al. 2021)")
AGGREGATORS.add("graddrop", graddrop, "gradient sign dropout (Chen et al. 2020)")
AGGREGATORS.add("alignedmtl", alignedmtl, "aligned orthogonal components (Senushkin et al. 2023)")
AGGREGATORS.add("upgrad", upgrad, "unconflicting projection of gradients (Quinton & Rey 2024)")
AGGREGATORS.add("dbmtl", dbmtl, "dual balancing of log-loss gradients (Lin et al. 2023)")
AGGREGATORS.add("fairgrad", fairgrad, "alpha-fair resource allocation (Ban & Ji 2024)")
AGGREGATORS.add("excessmtl", excessmtl, "exponentiated weights on excess risks (He et al. 2024)")
AGGREGATORS.add("config", config_grad, "conflict-free inverse gradients (Liu et al. 2024)")


def aggregate(name: str, grads: Tensor, **options: Any) -> Tensor:
    """The update direction (P) of method ``name`` for the K x P per-task gradient matrix ``grads``."""
    if grads.dim() != 2:
        raise ValueError(f"grads must be a K x P matrix (one row per task), got shape {tuple(grads.shape)}")
    return AGGREGATORS.get(name)(grads, **options)
