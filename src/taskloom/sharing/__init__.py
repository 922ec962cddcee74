"""Sharing architectures, registered by name.

Every entry of ``ARCHITECTURES`` is a builder ``build(trunk_factory, tasks, **options)``
returning a :class:`MultiTaskModule`; ``trunk_factory()`` gives a fresh trunk. Architectures
that cut the trunk at layer indices (see :mod:`taskloom.sharing.layers`) need an
``nn.Sequential`` trunk or one with ``.layers`` (the ``mlp`` and ``lenet`` trunks); low-level
supervision and the cascade also tap sequence trunks (``bilstm``, ``transformer``) by layer number.
"""
from __future__ import annotations

from taskloom.registry import Registry
from taskloom.sharing.add_task import add_task, remove_task
from taskloom.sharing.adversarial import GradientReversal, GradientReversalLayer, build_adversarial, make_adversarial, reverse_gradient
from taskloom.sharing.base import MultiTaskModule
from taskloom.sharing.cascade import Cascade, build_cascade
from taskloom.sharing.cross_stitch import CrossStitchNetwork, CrossStitchUnit, build_cross_stitch
from taskloom.sharing.hard import MultiTaskModel, build_hard, predict
from taskloom.sharing.hybrid import HybridSharing, build_hybrid
from taskloom.sharing.interaction import FeatureInteraction, build_interaction
from taskloom.sharing.low_level import LowLevelSupervision, build_low_level
from taskloom.sharing.mmoe import MMoE, build_mmoe
from taskloom.sharing.parameters import count_parameters
from taskloom.sharing.ple import PLE, build_ple
from taskloom.sharing.soft import SoftSharing, build_soft, tie_penalty

ARCHITECTURES: Registry = Registry("architecture")
ARCHITECTURES.add("hard", build_hard, "hard parameter sharing: one trunk, one head per task (Caruana 1997)")
ARCHITECTURES.add("soft", build_soft, "one tower per task tied by an L2 or trace-norm penalty (Duong 2015; Yang 2017)")
ARCHITECTURES.add("hybrid", build_hybrid, "hard-shared lower layers, soft-tied upper towers; option split")
ARCHITECTURES.add("cross_stitch", build_cross_stitch, "task towers mixed by cross-stitch units (Misra et al. 2016)")
ARCHITECTURES.add("mmoe", build_mmoe, "shared experts, one softmax gate per task (Ma et al. 2018)")
ARCHITECTURES.add("ple", build_ple, "shared and task experts with per-task gates; 1 level = CGC (Tang et al. 2020)")
ARCHITECTURES.add("low_level", build_low_level, "each head at its own trunk depth (Søgaard & Goldberg 2016)")
ARCHITECTURES.add("cascade", build_cascade, "higher tasks read lower tasks' label embeddings (Hashimoto et al. 2017)")
ARCHITECTURES.add("interaction", build_interaction, "task towers exchange and fuse features at a layer (Xia & Ding 2019)")
ARCHITECTURES.add("adversarial", build_adversarial, "tasks behind a gradient-reversal layer (Ganin & Lempitsky 2015)")

__all__ = [
    "ARCHITECTURES", "Cascade", "CrossStitchNetwork", "CrossStitchUnit", "FeatureInteraction", "GradientReversal",
    "GradientReversalLayer", "HybridSharing", "LowLevelSupervision", "MMoE", "MultiTaskModel", "MultiTaskModule",
    "PLE", "SoftSharing", "add_task", "count_parameters", "make_adversarial", "predict", "remove_task",
    "reverse_gradient", "tie_penalty",
]
