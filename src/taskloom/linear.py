"""A linear multi-task estimator with the cross-task penalties, scikit-learn style (fit / predict / score / coef_).

Built on the proximal operators of :mod:`taskloom.regularizers.prox`, so that the block-sparse
solution can be checked against scikit-learn's ``MultiTaskLasso``. With scikit-learn installed it
is a scikit-learn estimator (``clone``, ``cross_val_score``, ``GridSearchCV``); without, it keeps
``get_params`` / ``set_params`` of its own.
"""
from __future__ import annotations

import logging
import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

from taskloom.regularizers.mean import mean_penalty
from taskloom.regularizers.prox import (
    cluster_metric, group_soft_threshold, prox_l1inf, prox_squared_trace, singular_value_threshold, task_covariance,
)

log = logging.getLogger(__name__)

try:
    from sklearn.base import BaseEstimator, RegressorMixin
except ImportError:  # scikit-learn is optional: the estimator then keeps its own parameter methods
    class BaseEstimator:  # type: ignore[no-redef]
        """``get_params`` / ``set_params`` over the constructor's arguments, as scikit-learn's."""

        _parameters: tuple[str, ...] = ()

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            return {k: getattr(self, k) for k in self._parameters}

        def set_params(self, **params: Any) -> Any:
            for key, value in params.items():
                if key not in self._parameters:
                    raise ValueError(f"unknown parameter {key!r}; known: {sorted(self._parameters)}")
                setattr(self, key, value)
            return self

    class RegressorMixin:  # type: ignore[no-redef]
        _estimator_type = "regressor"

PENALTIES = ("l21", "l1inf", "trace", "mean", "cluster", "trl", "none")
_DUAL = ("l21", "l1inf", "trace")


class _LeastSquares:
    """``sum_t (1/(2 n_t)) ||m_t * (y_t - X w_t - b_t)||^2`` with the intercepts ``b`` minimized out."""

    def __init__(self, X: Tensor, Y: Tensor, fit_intercept: bool) -> None:
        self.mask = ~torch.isnan(Y)
        self.counts = self.mask.sum(dim=0).to(X.dtype)
        empty = [t for t in range(Y.shape[1]) if self.counts[t] == 0]
        if empty:
            raise ValueError(f"target column(s) {empty} have no labelled row (all NaN); drop them or label some rows")
        self.full = bool(self.mask.all())
        self.fit_intercept = fit_intercept
        maskf = self.mask.to(X.dtype)
        Y0 = torch.where(self.mask, Y, torch.zeros_like(Y))
        if fit_intercept:
            self.x_mean = (maskf.T @ X) / self.counts[:, None]  # T x d, over each task's labelled rows
            self.y_mean = Y0.sum(dim=0) / self.counts
        else:
            self.x_mean = torch.zeros(Y.shape[1], X.shape[1], dtype=X.dtype)
            self.y_mean = torch.zeros(Y.shape[1], dtype=X.dtype)
        self.Yc = (Y0 - self.y_mean) * maskf
        self.y_norms = (self.Yc ** 2).sum(dim=0)
        if self.full:
            Xc = X - self.x_mean[0] if fit_intercept else X
            n = X.shape[0]
            self.gram = Xc.T @ Xc
            self.xty = Xc.T @ self.Yc
            self.lipschitz = float(torch.linalg.eigvalsh(self.gram)[-1]) / n
        else:
            self.X, self.maskf = X, maskf
            self.lipschitz = max(self._task_lipschitz(X, t) for t in range(Y.shape[1]))

    def _task_lipschitz(self, X: Tensor, t: int) -> float:
        rows = X[self.mask[:, t]] - self.x_mean[t]
        return float(torch.linalg.matrix_norm(rows, ord=2) ** 2) / float(self.counts[t])

    def residual_terms(self, W: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The loss, its gradient, and ``sum_t <r_t, yc_t> / n_t`` (for the dual objective) at ``W``."""
        if self.full:
            n = self.counts[0]
            GW = self.gram @ W
            cross = (W * self.xty).sum(dim=0)
            loss = (self.y_norms - 2 * cross + (W * GW).sum(dim=0)).sum() / (2 * n)
            return loss, (GW - self.xty) / n, (self.y_norms - cross).sum() / n
        offsets = self.y_mean - (self.x_mean * W.T).sum(dim=1) if self.fit_intercept else self.y_mean
        R = (self.Yc + self.y_mean - self.X @ W - offsets) * self.maskf
        loss = ((R ** 2).sum(dim=0) / (2 * self.counts)).sum()
        grad = -(self.X.T @ R) / self.counts
        return loss, grad, ((R * self.Yc).sum(dim=0) / self.counts).sum()

    def intercept(self, W: Tensor) -> Tensor:
        return self.y_mean - (self.x_mean * W.T).sum(dim=1)


def _penalty_value(name: str, W: Tensor, alpha: float, metric: Tensor | None, eta: float) -> Tensor:
    if name == "l21":
        return alpha * W.norm(dim=1).sum()
    if name == "l1inf":
        return alpha * W.abs().amax(dim=1).sum()
    if name == "trace":
        return alpha * torch.linalg.matrix_norm(W, ord="nuc")
    if name == "trl":
        return alpha * torch.linalg.matrix_norm(W, ord="nuc") ** 2
    if name == "mean":
        return alpha * mean_penalty(W)
    if name == "cluster":
        T = W.shape[1]
        inverse = torch.linalg.inv(eta * torch.eye(T, dtype=W.dtype) + metric)
        return alpha * eta * (1 + eta) * torch.sum((W @ inverse) * W)
    return W.new_zeros(())


def _dual_norm(name: str, G: Tensor) -> Tensor:
    if name == "l21":
        return G.norm(dim=1).max()
    if name == "l1inf":
        return G.abs().sum(dim=1).max()
    return torch.linalg.matrix_norm(G, ord=2)


class MultiTaskLinear(RegressorMixin, BaseEstimator):
    """Linear regression for T tasks at once with a cross-task penalty, fitted by FISTA in float64.

    Minimizes ``sum_t (1/(2 n_t)) ||y_t - X w_t - b_t||^2 + penalty(W)`` over the d x T matrix ``W``,
    where ``n_t`` counts task t's labelled rows: a NaN in ``Y`` marks a missing target and is masked
    out (each intercept is fitted on its task's labelled rows). Without NaNs the loss is scikit-learn's
    ``(1/(2n)) ||Y - XW||_F^2``. Penalties, with ``alpha`` as in scikit-learn and MALSAR's ``rho = n alpha``
    (its loss being ``(1/2)||Y - XW||_F^2`` on a shared design matrix):

    - ``"l21"``: ``alpha sum_j ||W[j, :]||_2``, exactly scikit-learn's ``MultiTaskLasso(alpha)``;
    - ``"l1inf"``: ``alpha sum_j max_t |W[j, t]|`` (Quattoni et al. 2009);
    - ``"trace"``: ``alpha ||W||_*`` (Argyriou et al. 2008; Pong et al. 2010);
    - ``"mean"``: ``alpha sum_t ||w_t - mean(w)||^2`` (Evgeniou & Pontil 2004);
    - ``"cluster"``: ``alpha eta (1 + eta) min_M tr(W (eta I + M)^{-1} W^T)``, ``tr M = n_clusters``,
      ``0 <= M <= I`` (Zhou, Chen & Ye 2011), by alternating FISTA on ``W`` and the closed-form ``M``;
    - ``"trl"``: ``alpha min_Omega tr(W Omega^{-1} W^T) = alpha ||W||_*^2`` (Zhang & Yeung 2010), solved
      through the prox of the squared trace norm; the fitted ``task_covariance_`` is the closed-form Omega;
    - ``"none"``: independent least squares per task.

    The same penalty as a regularizer in the :class:`~taskloom.train.trainer.Trainer`, whose regression
    loss is plain MSE (no 1/2), with ``strength`` s matches ``alpha = s / 2`` here (MALSAR ``rho = n s / 2``).

    Stopping: for l21, l1inf and trace, the duality gap of the objective above is at most
    ``tol * sum_t ||yc_t||^2 / n_t`` (``yc_t``: task t's labelled targets, centred when fitting an
    intercept), which without NaNs is ``tol * ||Yc||_F^2 / n``: scikit-learn's MultiTaskLasso rule
    (its gap of ``n`` times this objective at most ``tol * ||Yc||_F^2``), so one ``tol`` means the
    same in both; the dual point is the scaled residual, as in scikit-learn. Otherwise the step's
    gradient-mapping norm is below ``tol`` times that at W = 0. Quadratic penalties (mean, cluster)
    enter through their exact prox, so a large ``alpha`` does not slow the solver. ``coef_`` is
    T x d, ``intercept_`` has length T; ``score`` is the mean R^2 over tasks on their labelled rows.
    """

    _parameters = ("penalty", "alpha", "fit_intercept", "max_iter", "tol", "n_clusters", "eta", "max_outer_iter")

    def __init__(self, penalty: str = "l21", alpha: float = 1.0, fit_intercept: bool = True, max_iter: int = 1000,
                 tol: float = 1e-4, n_clusters: int = 2, eta: float = 1.0, max_outer_iter: int = 50) -> None:
        self.penalty = penalty
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.n_clusters = n_clusters
        self.eta = eta
        self.max_outer_iter = max_outer_iter

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # Y is n x T; a NaN in Y is a missing target
        return tags

    def _validate(self, X: Any, Y: Any) -> tuple[Tensor, Tensor]:
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}; got {self.penalty!r}")
        if not (isinstance(self.alpha, numbers.Real) and not isinstance(self.alpha, bool) and self.alpha >= 0):
            raise ValueError(f"alpha must be a number >= 0; got {self.alpha!r}")
        for name in ("max_iter", "max_outer_iter"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        if not (isinstance(self.tol, numbers.Real) and self.tol >= 0):
            raise ValueError(f"tol must be a number >= 0; got {self.tol!r}")
        X = torch.as_tensor(np.asarray(X, dtype=np.float64))
        Y = torch.as_tensor(np.asarray(Y, dtype=np.float64))
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {tuple(X.shape)}")
        if Y.ndim == 1:
            Y = Y[:, None]
        if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"Y must be (n_samples, n_tasks) with the {X.shape[0]} rows of X; got {tuple(Y.shape)}")
        if not torch.isfinite(X).all():
            row = int(torch.nonzero(~torch.isfinite(X).all(dim=1))[0])
            raise ValueError(f"X has a NaN or infinite value in row {row}; impute or drop it (only Y may hold NaN)")
        if torch.isinf(Y).any():
            raise ValueError("Y has an infinite value; mark a missing target with NaN")
        return X, Y

    def fit(self, X: Any, Y: Any) -> "MultiTaskLinear":
        """Fit ``W`` (and intercepts) on ``X`` (n x d) and ``Y`` (n x T, NaN where a target is missing)."""
        self._vector_target = np.ndim(Y) == 1
        X, Y = self._validate(X, Y)
        self.n_features_in_ = int(X.shape[1])
        data = _LeastSquares(X, Y, self.fit_intercept)
        T = Y.shape[1]
        W = torch.zeros(X.shape[1], T, dtype=torch.float64)
        self.n_iter_ = 0
        metric = None
        if self.penalty == "cluster":
            if not 1 <= self.n_clusters <= T:
                raise ValueError(f"n_clusters must be between 1 and the number of tasks ({T}); got {self.n_clusters}")
            metric = torch.eye(T, dtype=torch.float64) * (self.n_clusters / T)
            previous = float("inf")
            for _ in range(int(self.max_outer_iter)):
                W, iterations, _ = self._fista(data, W, metric)
                self.n_iter_ += iterations
                metric = cluster_metric(W, self.n_clusters, self.eta)
                objective = float(data.residual_terms(W)[0] + _penalty_value("cluster", W, self.alpha, metric,
                                                                               self.eta))
                if previous - objective <= self.tol * abs(objective):
                    break
                previous = objective
            self.cluster_metric_ = metric.numpy()
        else:
            W, self.n_iter_, self.dual_gap_ = self._fista(data, W, None)
        if self.penalty == "trl":
            self.task_covariance_ = task_covariance(W).numpy()
        self.objective_ = float(data.residual_terms(W)[0] + _penalty_value(self.penalty, W, self.alpha, metric,
                                                                             self.eta))
        self.coef_ = W.T.contiguous().numpy()
        self.intercept_ = (data.intercept(W) if self.fit_intercept else torch.zeros(T, dtype=torch.float64)).numpy()
        return self

    def _prox(self, V: Tensor, step: float, metric: Tensor | None) -> Tensor:
        tau = step * self.alpha
        if self.penalty == "l21":
            return group_soft_threshold(V, tau)
        if self.penalty == "l1inf":
            return prox_l1inf(V, tau)
        if self.penalty == "trace":
            return singular_value_threshold(V, tau)
        if self.penalty == "trl":
            return prox_squared_trace(V, tau)
        if self.penalty == "mean":
            mean = V.mean(dim=1, keepdim=True)
            return mean + (V - mean) / (1 + 2 * tau)
        if self.penalty == "cluster":
            T = V.shape[1]
            eye = torch.eye(T, dtype=V.dtype)
            inverse = torch.linalg.inv(self.eta * eye + metric)
            return V @ torch.linalg.inv(eye + 2 * tau * self.eta * (1 + self.eta) * inverse)
        return V

    def _fista(self, data: _LeastSquares, W: Tensor, metric: Tensor | None) -> tuple[Tensor, int, float]:
        """FISTA (Beck & Teboulle 2009) with gradient-based momentum restart (O'Donoghue & Candes 2015).

        Returns the weights, the iterations used and the last duality gap (NaN where not computed).
        """
        step = 1.0 / max(data.lipschitz, 1e-300)
        scale = float((data.y_norms / data.counts).sum())  # the gap's yardstick, as scikit-learn's (see the class)
        max_iter = int(self.max_iter)
        zero = torch.zeros_like(W)
        zero_mapping = float((self._prox(zero - step * data.residual_terms(zero)[1], step, metric)).norm()) / step
        Z, t, gap = W.clone(), 1.0, float("nan")
        for iteration in range(1, max_iter + 1):
            grad = data.residual_terms(Z)[1]
            W_next = self._prox(Z - step * grad, step, metric)
            move = W_next - Z
            if self.penalty in _DUAL:
                if iteration % 10 == 0 or iteration == max_iter:
                    gap = self._duality_gap(data, W_next)
                    if gap <= self.tol * scale:
                        W = W_next
                        return W, iteration, gap
            elif float(move.norm()) / step <= self.tol * max(zero_mapping, 1e-300):
                return W_next, iteration, gap
            if float((move * (W_next - W)).sum()) < 0:
                t_next, Z = 1.0, W_next.clone()
            else:
                t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
                Z = W_next + ((t - 1) / t_next) * (W_next - W)
            W, t = W_next, t_next
        log.warning("MultiTaskLinear(penalty=%r) did not converge in %d iterations (gap %.3g); raise max_iter or tol",
                    self.penalty, max_iter, gap)
        return W, max_iter, gap

    def _duality_gap(self, data: _LeastSquares, W: Tensor) -> float:
        loss, grad, ry = data.residual_terms(W)
        primal = loss + _penalty_value(self.penalty, W, self.alpha, None, self.eta)
        norm = float(_dual_norm(self.penalty, grad))
        s = min(1.0, self.alpha / norm) if norm > 0 else 1.0
        dual = s * ry - s * s * loss
        return float(primal - dual)

    def predict(self, X: Any) -> np.ndarray:
        """Predictions, n x T (a vector of n when fitted on a vector target)."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("this MultiTaskLinear is not fitted yet; call fit(X, Y) first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X must be (n_samples, {self.coef_.shape[1]}); got shape {X.shape}")
        predicted = X @ self.coef_.T + self.intercept_
        return predicted[:, 0] if getattr(self, "_vector_target", False) else predicted

    def score(self, X: Any, Y: Any, sample_weight: Any = None) -> float:
        """Mean over tasks of R^2 = 1 - SS_res / SS_tot, each on its labelled (non-NaN) rows of ``Y``.

        A task whose labelled targets are all equal has R^2 1 when predicted exactly, else 0
        (scikit-learn's convention).
        """
        if sample_weight is not None:
            raise ValueError("score takes no sample_weight; MultiTaskLinear fits and scores unweighted rows")
        Y = np.asarray(Y, dtype=np.float64)
        predicted = np.asarray(self.predict(X), dtype=np.float64)
        Y, predicted = (Y[:, None], predicted[:, None]) if Y.ndim == 1 else (Y, predicted.reshape(len(predicted), -1))
        if Y.shape != predicted.shape:
            raise ValueError(f"Y must be (n_samples, {predicted.shape[1]}) for this model; got shape {Y.shape}")
        scores = []
        for t in range(Y.shape[1]):
            labelled = ~np.isnan(Y[:, t])
            if not labelled.any():
                raise ValueError(f"target column {t} has no labelled row (all NaN); R^2 is undefined there")
            y, p = Y[labelled, t], predicted[labelled, t]
            residual, total = float(((y - p) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
            scores.append(1.0 - residual / total if total > 0 else float(residual == 0))
        return float(np.mean(scores))
