"""Clustered multi-task learning, convex relaxation (Jacob et al. 2008; Zhou, Chen & Ye 2011, MALSAR CMTL)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from taskloom.regularizers.base import ParameterSelection, Regularizer, _working
from taskloom.regularizers.prox import cluster_metric


def cluster_penalty(W: Tensor, M: Tensor, eta: float) -> Tensor:
    """``eta (1 + eta) tr(W (eta I + M)^{-1} W^T)``, the convex relaxation of k-means over tasks."""
    T = W.shape[1]
    inverse = torch.linalg.inv(eta * torch.eye(T, dtype=W.dtype, device=W.device) + M.to(W.dtype))
    return eta * (1 + eta) * torch.sum((W @ inverse) * W)


class ClusteredMTL(Regularizer):
    """``strength * eta (1 + eta) tr(W (eta I + M)^{-1} W^T)``; ``M`` (tr M = k, 0 <= M <= I) in closed form.

    ``M`` starts at ``(k / T) I`` and is re-estimated after every ``update_every`` steps, which is an
    exact alternating minimization of a jointly convex objective; small ``eta`` clusters harder, large
    ``eta`` tends to plain ridge. Scaling (see :class:`~taskloom.regularizers.base.Regularizer`): in the
    trainer, whose regression loss is plain MSE, ``strength`` s is ``alpha = s / 2`` of
    ``(1/(2n)) ||Y - XW||_F^2 + alpha P(W)`` and MALSAR CMTL's ``rho1 = n s / 2``, ``rho2 = eta rho1``
    (loss ``(1/2)||Y - XW||_F^2``); under the ``1/(2n)`` loss (:class:`taskloom.linear.MultiTaskLinear`
    ``penalty="cluster"``) ``alpha = s``, ``rho1 = n s``.
    """

    def __init__(self, model: nn.Module, parameters: ParameterSelection = None, strength: float = 1e-3,
                 n_clusters: int = 2, eta: float = 1.0, update_every: int = 1,
                 tasks: list[str] | None = None) -> None:
        super().__init__(model, parameters, strength, tasks)
        T = len(self.task_names)
        if not 1 <= int(n_clusters) <= T:
            raise ValueError(f"n_clusters must be between 1 and the number of tasks ({T}); got {n_clusters!r}")
        if not eta > 0:
            raise ValueError(f"eta must be > 0; got {eta!r}")
        if int(update_every) < 1:
            raise ValueError(f"update_every must be an integer >= 1; got {update_every!r}")
        self.n_clusters, self.eta, self.update_every = int(n_clusters), float(eta), int(update_every)
        W = _working(self.task_matrix())
        self.metric = torch.eye(T, dtype=W.dtype, device=W.device) * (self.n_clusters / T)
        self.steps = 0

    def penalty(self) -> Tensor | None:
        if self.strength == 0:
            return None
        return self.strength * cluster_penalty(_working(self.task_matrix()), self.metric.detach(), self.eta)

    def _value(self) -> Tensor:
        return self.strength * cluster_penalty(_working(self.task_matrix()), self.metric, self.eta)

    @torch.no_grad()
    def update_metric(self) -> None:
        """Set ``M`` to its closed-form minimizer at the current weights."""
        W = _working(self.task_matrix())
        self.metric = cluster_metric(W.double(), self.n_clusters, self.eta).to(W.dtype)

    def proximal_step(self, lr: float) -> None:
        self.steps += 1
        if self.steps % self.update_every == 0:
            self.update_metric()

    def report(self) -> dict[str, Any]:
        return {**super().report(), "n_clusters": self.n_clusters, "eta": self.eta,
                "metric": self.metric.double().cpu().tolist()}

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric.detach().cpu().clone(), "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        metric = torch.as_tensor(state["metric"])
        if metric.shape != self.metric.shape:
            raise ValueError(f"saved M has shape {tuple(metric.shape)}; this regularizer has "
                             f"{len(self.task_names)} tasks {self.task_names}")
        self.metric = metric.to(device=self.metric.device, dtype=self.metric.dtype)
        self.steps = int(state["steps"])
