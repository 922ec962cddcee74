"""Balancing methods: how per-task losses become one update. Each is registered by name."""
from __future__ import annotations

from typing import Any, Sequence

from taskloom.balancing.base import Balancer, LossWeighting
from taskloom.balancing.static import EqualWeighting, StaticWeighting
from taskloom.registry import Registry

BALANCERS: Registry = Registry("balancing method")
BALANCERS.add("equal", EqualWeighting, "equal weighting: the sum of task losses")
BALANCERS.add("static", StaticWeighting, "static weights given per task in the config")

# --- loss-level methods (start)
from taskloom.balancing.autolambda import AutoLambda  # noqa: E402
from taskloom.balancing.dwa import DynamicWeightAverage  # noqa: E402
from taskloom.balancing.famo import FAMO  # noqa: E402
from taskloom.balancing.gls import GeometricLossStrategy  # noqa: E402
from taskloom.balancing.gradnorm import GradNorm  # noqa: E402
from taskloom.balancing.rlw import RandomLossWeighting  # noqa: E402
from taskloom.balancing.stch import STCH  # noqa: E402
from taskloom.balancing.uncertainty import UncertaintyWeighting  # noqa: E402

BALANCERS.add("uncertainty", UncertaintyWeighting, "learned homoscedastic-uncertainty weights (Kendall et al. 2018)")
BALANCERS.add("dwa", DynamicWeightAverage, "dynamic weight average from epoch loss ratios (Liu et al. 2019)")
BALANCERS.add("rlw", RandomLossWeighting, "random loss weights drawn every step (Lin et al. 2022)")
BALANCERS.add("gls", GeometricLossStrategy, "geometric mean of the task losses (Chennupati et al. 2019)")
BALANCERS.add("gradnorm", GradNorm, "weights that balance last-shared-layer gradient norms (Chen et al. 2018)")
BALANCERS.add("famo", FAMO, "fast adaptive multitask optimization (Liu et al. 2023)")
BALANCERS.add("stch", STCH, "smooth Tchebycheff scalarization of the losses (Lin et al. 2024)")
BALANCERS.add("autolambda", AutoLambda, "weights learned on validation by a lookahead step (Liu et al. 2022)")
# --- loss-level methods (end)

# --- gradient-level methods (start)
from taskloom.balancing.aggregate import AGGREGATORS, aggregate  # noqa: E402
from taskloom.balancing.alignedmtl import AlignedMTL  # noqa: E402
from taskloom.balancing.cagrad import CAGrad  # noqa: E402
from taskloom.balancing.config_grad import ConFIG  # noqa: E402
from taskloom.balancing.dbmtl import DBMTL  # noqa: E402
from taskloom.balancing.excessmtl import ExcessMTL  # noqa: E402
from taskloom.balancing.fairgrad import FairGrad  # noqa: E402
from taskloom.balancing.graddrop import GradDrop  # noqa: E402
from taskloom.balancing.gradient import GradientBalancer  # noqa: E402
from taskloom.balancing.gradvac import GradVac  # noqa: E402
from taskloom.balancing.imtl import IMTLG  # noqa: E402
from taskloom.balancing.mgda import MGDA, MGDAUB  # noqa: E402
from taskloom.balancing.moco import MoCo  # noqa: E402
from taskloom.balancing.modo import MoDo  # noqa: E402
from taskloom.balancing.nashmtl import NashMTL  # noqa: E402
from taskloom.balancing.pcgrad import PCGrad  # noqa: E402
from taskloom.balancing.sdmgrad import SDMGrad  # noqa: E402
from taskloom.balancing.upgrad import UPGrad  # noqa: E402

BALANCERS.add("mgda", MGDA, "min-norm convex combination of task gradients (Sener & Koltun 2018)")
BALANCERS.add("mgda_ub", MGDAUB, "MGDA on the shared representation's gradients (Sener & Koltun 2018)")
BALANCERS.add("pcgrad", PCGrad, "projecting conflicting gradients (Yu et al. 2020)")
BALANCERS.add("gradvac", GradVac, "gradient vaccine: adaptive similarity targets (Wang et al. 2021)")
BALANCERS.add("cagrad", CAGrad, "conflict-averse gradient descent (Liu et al. 2021)")
BALANCERS.add("nashmtl", NashMTL, "Nash bargaining solution of the task gradients (Navon et al. 2022)")
BALANCERS.add("imtl_g", IMTLG, "impartial MTL: equal projections on unit gradients (Liu et al. 2021)")
BALANCERS.add("graddrop", GradDrop, "gradient sign dropout (Chen et al. 2020)")
BALANCERS.add("alignedmtl", AlignedMTL, "aligned, orthogonal equal-norm components (Senushkin et al. 2023)")
BALANCERS.add("upgrad", UPGrad, "mean of projections onto the dual cone (Quinton & Rey 2024)")
BALANCERS.add("dbmtl", DBMTL, "dual balancing of loss scales and gradient norms (Lin et al. 2023)")
BALANCERS.add("fairgrad", FairGrad, "alpha-fair allocation of the update, G w = w^(-1/alpha) (Ban & Ji 2024)")
BALANCERS.add("excessmtl", ExcessMTL, "exponentiated weights on estimated excess risks (He et al. 2024)")
BALANCERS.add("config", ConFIG, "conflict-free: equal cosine with every task gradient (Liu et al. 2024)")
BALANCERS.add("moco", MoCo, "MGDA on tracked (moving-average) gradients (Fernando et al. 2023)")
BALANCERS.add("modo", MoDo, "MGDA weights from double-sampled gradients (Chen et al. 2023)")
BALANCERS.add("sdmgrad", SDMGrad, "direction-oriented MGDA pulled toward the mean gradient (Xiao et al. 2023)")
# --- gradient-level methods (end)


def build_balancer(name: str, task_names: Sequence[str], **options: Any) -> Balancer:
    """The balancing method ``name`` for these tasks, with its options."""
    return BALANCERS.get(name)(task_names, **options)


__all__ = ["BALANCERS", "Balancer", "LossWeighting", "EqualWeighting", "StaticWeighting", "build_balancer"]
