"""ExcessMTL (He et al., ICML 2024, "Robust multi-task learning with excess risks").

Tasks are weighted by how far each is from its own best loss (its excess risk), not by the loss
itself, so noisy tasks with a high irreducible loss do not take over. The excess risk of task i
is estimated by a second-order expansion around its optimum, (theta - theta*)' H_i (theta -
theta*) / 2 with theta - theta* ~ H_i^-1 g_i, i.e. g_i' H_i^-1 g_i / 2, where H_i is the
diagonal Adagrad preconditioner sqrt(sum_t g_{i,t}^2) of the task's accumulated squared
gradients. The weights are moved by exponentiated gradient ascent on the excess risks,
w_i <- w_i exp(eta r_i), normalized; the update is sum_i w_i g_i.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from taskloom.balancing.gradient import MODES, GradientBalancer


@dataclass
class ExcessMTLState:
    """The K x P accumulated squared gradients, the first excess estimates and the K log-weights."""

    squares: Tensor | None = None
    initial: Tensor | None = None
    log_weights: Tensor | None = None


def excess_risks(grads: Tensor, squares: Tensor, eps: float = 1e-8) -> Tensor:
    """r_i = g_i' diag(sqrt(squares_i) + eps)^-1 g_i / 2 for each row of the K x P ``grads``.

    A coordinate never seen with a gradient (its accumulated square is 0) contributes 0.
    """
    terms = grads * grads / (squares.sqrt() + eps)
    return 0.5 * torch.where(squares > 0, terms, torch.zeros_like(terms)).sum(dim=1)


def first_estimates(initial: Tensor, risks: Tensor) -> Tensor:
    """Each task's first positive excess estimate (NaN until it has one)."""
    return torch.where(torch.isnan(initial) & (risks > 0), risks, initial)


def relative_risks(risks: Tensor, initial: Tensor) -> Tensor:
    """r_i / r_i(first), 0 for a task that has had no positive estimate yet."""
    return torch.where(torch.isnan(initial), torch.zeros_like(risks), risks / initial)


def multiplicative_update(log_weights: Tensor, risks: Tensor, eta: float) -> Tensor:
    """log w + eta r, shifted so that the weights exp(log w) sum to 1 (one exponentiated-gradient step)."""
    moved = log_weights + eta * risks
    return moved - torch.logsumexp(moved, dim=0)


def excessmtl(grads: Tensor, state: ExcessMTLState | None = None, eta: float = 0.01, normalize: bool = True,
              eps: float = 1e-8) -> Tensor:
    """ExcessMTL's update from the K x P gradient matrix; ``state`` carries the accumulators from call to call."""
    state = state if state is not None else ExcessMTLState()
    k = grads.shape[0]
    g = grads.detach().to(torch.float64)
    state.squares = g * g if state.squares is None else state.squares + g * g
    risks = excess_risks(g, state.squares, eps)
    if normalize:
        initial = state.initial if state.initial is not None else torch.full_like(risks, math.nan)
        state.initial = first_estimates(initial, risks)
        risks = relative_risks(risks, state.initial)
    log_weights = state.log_weights if state.log_weights is not None else torch.full((k,), -math.log(k), dtype=g.dtype)
    state.log_weights = multiplicative_update(log_weights.to(g), risks, eta)
    weights = k * state.log_weights.exp()
    return weights.to(grads.dtype) @ grads


class ExcessMTL(GradientBalancer):
    """ExcessMTL (He et al. 2024): task weights by exponentiated gradient on Adagrad-estimated excess risks.

    ``eta`` (default 0.01, our choice) is the step of the multiplicative update; with ``normalize`` (default)
    each task's excess estimate is divided by its first one, so tasks of different loss scales
    are compared by relative progress. The present tasks' weights sum to their number (equal
    weighting's scale at the start). Parameter gradients only: the accumulated squares follow
    each shared parameter across steps, which per-sample representation gradients cannot.
    Accumulators, first estimates and log-weights are buffers, saved in checkpoints; a task
    absent from a batch keeps them.
    """

    modes = ("parameters",)
    lazy_buffers = ("squares",)

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 eta: float = 0.01, normalize: bool = True, eps: float = 1e-8, task_chunk: int | None = None,
                 engine: str = "auto") -> None:
        if mode not in self.modes and mode in MODES:
            raise ValueError(
                "excessmtl accumulates each shared parameter's squared gradient across steps and cannot use "
                "representation gradients (they are per sample, of a different batch each step): set "
                "balancing.options.mode to 'parameters' (the default) or pick a method that allows it, such as upgrad")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < math.inf:
            raise ValueError(f"balancing.options.eta of excessmtl must be a finite number >= 0, got {eta!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
            raise ValueError(f"balancing.options.eps of excessmtl must be a finite number >= 0, got {eps!r}")
        if not isinstance(normalize, bool):
            raise ValueError(f"balancing.options.normalize of excessmtl must be true or false, got {normalize!r}")
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
        self.eta, self.normalize, self.eps = float(eta), normalize, float(eps)
        k = len(self.task_names)
        self.register_buffer("squares", torch.zeros((k, 0), dtype=torch.float64))  # K x P, sized at the first step
        self.register_buffer("initial", torch.full((k,), math.nan, dtype=torch.float64))
        self.register_buffer("log_weights", torch.full((k,), -math.log(k), dtype=torch.float64))

    def check_task_chunk(self) -> None:
        """ExcessMTL refuses ``task_chunk``: its state holds every task's accumulated squared gradient."""
        raise ValueError(
            "excessmtl cannot use balancing.options.task_chunk: it accumulates every task's squared gradient of "
            "the shared parameters (a K x P state, by definition of the method), so chunking the per-task "
            "gradients would not bound its memory; remove task_chunk or pick a Gramian-based method such as upgrad")

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        k, size = len(self.task_names), grads.shape[1]
        if self.squares.shape[1] != size:
            if self.squares.numel():
                raise ValueError(f"excessmtl's accumulators have {self.squares.shape[1]} entries per task but the "
                                 f"gradients {size}: the shared parameters changed; build a new balancer")
            self.squares = torch.zeros((k, size), dtype=torch.float64, device=grads.device)
        if self.squares.device != grads.device:
            self.squares = self.squares.to(grads.device)
            self.initial, self.log_weights = self.initial.to(grads.device), self.log_weights.to(grads.device)
        rows = self.task_index(names).to(grads.device)
        g = grads.detach().to(torch.float64)
        squares = self.squares[rows] + g * g
        self.squares[rows] = squares
        risks = excess_risks(g, squares, self.eps)
        if self.normalize:
            initial = first_estimates(self.initial[rows], risks)
            self.initial[rows] = initial
            risks = relative_risks(risks, initial)
        log_weights = multiplicative_update(self.log_weights[rows], risks, self.eta)
        self.log_weights[rows] = log_weights + torch.logsumexp(self.log_weights[rows], dim=0)
        self.log_weights -= torch.logsumexp(self.log_weights, dim=0)
        weights = (len(names) * log_weights.exp()).to(grads.dtype)
        return weights @ grads, weights
