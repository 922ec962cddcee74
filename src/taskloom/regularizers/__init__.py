"""Cross-task regularizers: penalties over the parameters of several tasks, each registered by name.

Build one as ``REGULARIZERS.get(name)(model, parameters=..., strength=..., **options)``.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from taskloom.registry import Registry
from taskloom.regularizers.base import ParameterSelection, Regularizer, select_task_parameters
from taskloom.regularizers.block_sparse import L1Inf, L21, BlockSparse
from taskloom.regularizers.cluster import ClusteredMTL
from taskloom.regularizers.mean import MeanRegularized
from taskloom.regularizers.trace import TraceNorm
from taskloom.regularizers.trl import TaskRelationship

REGULARIZERS: Registry = Registry("regularizer")
REGULARIZERS.add("l21", L21, "block-sparse L1/L2 across tasks, by group soft-thresholding (Obozinski, Taskar & "
                 "Jordan 2010, 'Joint covariate selection and joint subspace selection for multiple classification "
                 "problems', Statistics and Computing)")
REGULARIZERS.add("l1inf", L1Inf, "block-sparse L1/Linf across tasks, by L1-ball projection (Quattoni, Carreras, "
                 "Collins & Darrell 2009, 'An efficient projection for l1,infinity regularization', ICML)")
REGULARIZERS.add("block_sparse", BlockSparse, "block-sparse L1/Lq across tasks with q = 2 or 'inf' (Obozinski et al. "
                 "2010; Quattoni et al. 2009)")
REGULARIZERS.add("trace", TraceNorm, "trace norm of stacked task weights (Argyriou, Evgeniou & Pontil 2008, 'Convex "
                 "multi-task feature learning', Machine Learning), by singular value thresholding (Cai, Candes & "
                 "Shen 2010)")
REGULARIZERS.add("mean", MeanRegularized, "distance of each task's weights to their mean (Evgeniou & Pontil 2004, "
                 "'Regularized multi-task learning', KDD)")
REGULARIZERS.add("cluster", ClusteredMTL, "convex clustered multi-task learning (Jacob, Bach & Vert 2008, 'Clustered "
                 "multi-task learning: a convex formulation', NIPS; Zhou, Chen & Ye 2011, 'Clustered multi-task "
                 "learning via alternating structure optimization', NIPS)")
REGULARIZERS.add("trl", TaskRelationship, "learned task covariance, closed-form updates (Zhang & Yeung 2010, 'A "
                 "convex formulation for learning task relationships in multi-task learning', UAI)")


def build_regularizer(name: str, model: nn.Module, **options: Any) -> Regularizer:
    """The regularizer ``name`` over ``model``'s task parameters, with its options."""
    return REGULARIZERS.get(name)(model, **options)


__all__ = [
    "REGULARIZERS", "BlockSparse", "ClusteredMTL", "L1Inf", "L21", "MeanRegularized", "ParameterSelection",
    "Regularizer", "TaskRelationship", "TraceNorm", "build_regularizer", "select_task_parameters",
]
