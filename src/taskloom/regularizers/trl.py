"""Task-relationship learning (Zhang & Yeung 2010): a learned task covariance couples the task weights."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from taskloom.regularizers.base import ParameterSelection, Regularizer, _working
from taskloom.regularizers.prox import task_covariance


class TaskRelationship(Regularizer):
    """``strength * tr(W Omega^{-1} W^T)`` with ``Omega`` re-estimated in closed form after steps.

    ``Omega = (W^T W)^{1/2} / tr((W^T W)^{1/2})`` every ``update_every`` proximal steps (starting from
    ``I / T``); minimized over ``Omega`` the penalty is ``strength * ||W||_*^2``. Scaling (see
    :class:`~taskloom.regularizers.base.Regularizer`): in the trainer, whose regression loss is plain
    MSE, ``strength`` s is ``alpha = s / 2`` of ``(1/(2n)) ||Y - XW||_F^2 + alpha ||W||_*^2`` and a
    MALSAR-style ``rho = n s / 2``; under the ``1/(2n)`` loss (:class:`taskloom.linear.MultiTaskLinear`
    ``penalty="trl"``) ``alpha = s``, ``rho = n s``. The trainer writes the final ``Omega`` (``report()``)
    to ``regularizers.json`` in its run directory.
    """

    def __init__(self, model: nn.Module, parameters: ParameterSelection = None, strength: float = 1e-3,
                 update_every: int = 1, eps: float = 1e-4, tasks: list[str] | None = None) -> None:
        super().__init__(model, parameters, strength, tasks)
        if int(update_every) < 1:
            raise ValueError(f"update_every must be an integer >= 1; got {update_every!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0; got {eps!r}")
        self.update_every = int(update_every)
        self.eps = float(eps)
        W = self.task_matrix()
        T = W.shape[1]
        self.omega = torch.eye(T, dtype=_working(W).dtype, device=W.device) / T
        self._omega_inverse = torch.linalg.inv(self.omega)
        self.steps = 0

    def _quadratic(self, W: Tensor) -> Tensor:
        W = _working(W)
        inverse = self._omega_inverse.to(device=W.device, dtype=W.dtype)
        return torch.sum((W @ inverse) * W)

    def penalty(self) -> Tensor | None:
        return self.strength * self._quadratic(self.task_matrix()) if self.strength > 0 else None

    def _value(self) -> Tensor:
        return self.strength * self._quadratic(self.task_matrix())

    @torch.no_grad()
    def update_covariance(self) -> None:
        """Set ``Omega`` to its closed-form minimizer at the current weights."""
        W = _working(self.task_matrix())
        self.omega = task_covariance(W.double(), self.eps).to(W.dtype)
        self._omega_inverse = torch.linalg.inv(self.omega.double()).to(W.dtype)

    def proximal_step(self, lr: float) -> None:
        self.steps += 1
        if self.steps % self.update_every == 0:
            self.update_covariance()

    def covariance(self) -> dict[str, Any]:
        """``Omega`` and the task correlations as lists of lists, rows and columns in ``tasks`` order."""
        omega = self.omega.double().cpu()
        d = torch.sqrt(torch.clamp(torch.diagonal(omega), min=1e-300))
        return {"tasks": list(self.task_names), "omega": omega.tolist(),
                "correlation": (omega / d[:, None] / d[None, :]).tolist()}

    def report(self) -> dict[str, Any]:
        return {**super().report(), **self.covariance()}

    def state_dict(self) -> dict[str, Any]:
        return {"omega": self.omega.detach().cpu().clone(), "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        omega = torch.as_tensor(state["omega"])
        if omega.shape != self.omega.shape:
            raise ValueError(f"saved Omega has shape {tuple(omega.shape)}; this regularizer has "
                             f"{len(self.task_names)} tasks {self.task_names}")
        self.omega = omega.to(device=self.omega.device, dtype=self.omega.dtype)
        self._omega_inverse = torch.linalg.inv(self.omega.double()).to(self.omega.dtype)
        self.steps = int(state["steps"])
