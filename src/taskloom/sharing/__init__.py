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
from taskloom.sharing.branching import BranchingNetwork, build_branching
from taskloom.sharing.cascade import Cascade, build_cascade
from taskloom.sharing.dselect_k import DSelectK, build_dselect_k, smooth_step
from taskloom.sharing.cross_stitch import CrossStitchNetwork, CrossStitchUnit, build_cross_stitch
from taskloom.sharing.hard import MultiTaskModel, build_hard, predict
from taskloom.sharing.hybrid import HybridSharing, build_hybrid
from taskloom.sharing.interaction import FeatureInteraction, PredictionInteraction, build_interaction
from taskloom.sharing.learn_to_branch import LearnToBranch, build_learn_to_branch
from taskloom.sharing.low_level import LowLevelSupervision, build_low_level
from taskloom.sharing.mmoe import MMoE, build_mmoe
from taskloom.sharing.mtan import MTAN, build_mtan
from taskloom.sharing.parameters import count_parameters
from taskloom.sharing.ple import PLE, build_ple
from taskloom.sharing.soft import SoftSharing, build_soft, tie_penalty

ARCHITECTURES: Registry = Registry("architecture")
ARCHITECTURES.add("hard", build_hard, "hard parameter sharing: one trunk, one head per task "
                  "(Caruana 1997, 'Multitask learning', Machine Learning 28)")
ARCHITECTURES.add("soft", build_soft, "one tower per task tied by an L2 penalty (Duong, Cohn, Bird & Cook 2015, "
                  "'Low resource dependency parsing: cross-lingual parameter sharing in a neural network parser') "
                  "or a trace-norm one (Yang & Hospedales 2017, 'Trace norm regularised deep multi-task learning')")
ARCHITECTURES.add("hybrid", build_hybrid, "hard-shared lower layers (Caruana 1997), soft-tied upper towers "
                  "(Duong et al. 2015; Yang & Hospedales 2017); option split")
ARCHITECTURES.add("cross_stitch", build_cross_stitch, "task towers mixed by cross-stitch units (Misra, Shrivastava, "
                  "Gupta & Hebert 2016, 'Cross-stitch networks for multi-task learning', CVPR)")
ARCHITECTURES.add("mmoe", build_mmoe, "shared experts, one softmax gate per task (Ma, Zhao, Yi, Chen, Hong & Chi "
                  "2018, 'Modeling task relationships in multi-task learning with multi-gate mixture-of-experts', KDD)")
ARCHITECTURES.add("ple", build_ple, "shared and task experts with per-task gates, 1 level = CGC (Tang, Liu, Zhao & "
                  "Gong 2020, 'Progressive layered extraction (PLE): a novel multi-task learning (MTL) model for "
                  "personalized recommendations', RecSys)")
ARCHITECTURES.add("low_level", build_low_level, "each head at its own trunk depth (Søgaard & Goldberg 2016, "
                  "'Deep multi-task learning with low level tasks supervised at lower layers', ACL)")
ARCHITECTURES.add("cascade", build_cascade, "higher tasks read lower tasks' label embeddings (Hashimoto, Xiong, "
                  "Tsuruoka & Socher 2017, 'A joint many-task model: growing a neural network for multiple NLP "
                  "tasks', EMNLP)")
ARCHITECTURES.add("interaction", build_interaction, "task towers, earlier towers' predictions fed into later ones' "
                  "upper layer (Xia & Ding 2019, 'Emotion-cause pair extraction: a new task to emotion analysis in "
                  "texts', ACL); mode features: fused features (an extension)")
ARCHITECTURES.add("adversarial", build_adversarial, "tasks behind a gradient-reversal layer (Ganin & Lempitsky "
                  "2015, 'Unsupervised domain adaptation by backpropagation', ICML)")
ARCHITECTURES.add("branching", build_branching, "an MLP trunk split into task branches layer by layer from the top "
                  "by task affinity (Lu, Kumar, Zhai, Cheng, Javidi & Feris 2017, 'Fully-adaptive feature sharing "
                  "in multi-task networks with applications in person attribute classification', CVPR)")
ARCHITECTURES.add("learn_to_branch", build_learn_to_branch, "candidate MLP blocks per layer, each child's parent "
                  "drawn by Gumbel-softmax over learned logits, then the argmax tree is fixed (Guo, Lee & Ulbricht "
                  "2020, 'Learning to branch for multi-task learning', ICML)")
ARCHITECTURES.add("mtan", build_mtan, "shared trunk blocks with per-task soft-attention masks (Liu, Johns & Davison "
                  "2019, 'End-to-end multi-task learning with attention', CVPR); option depths")
ARCHITECTURES.add("dselect_k", build_dselect_k, "shared experts, per task k binary-code selectors with a smooth step "
                  "(Hazimeh et al. 2021, 'DSelect-k: differentiable selection in the mixture of experts with "
                  "applications to multi-task learning', NeurIPS); options num_experts, k, gamma, gate, entropy")

__all__ = [
    "ARCHITECTURES", "BranchingNetwork", "Cascade", "CrossStitchNetwork", "CrossStitchUnit", "DSelectK",
    "FeatureInteraction", "GradientReversal", "GradientReversalLayer", "HybridSharing", "LearnToBranch",
    "LowLevelSupervision", "MMoE", "MTAN", "MultiTaskModel", "MultiTaskModule", "PLE", "PredictionInteraction",
    "SoftSharing", "add_task", "build_branching", "build_dselect_k", "build_learn_to_branch", "build_mtan",
    "count_parameters", "make_adversarial", "predict", "remove_task", "reverse_gradient", "smooth_step",
    "tie_penalty",
]
