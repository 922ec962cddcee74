"""MoCo (Fernando et al., ICLR 2023, "Mitigating gradient bias in multi-objective learning: a provably
convergent approach").

Stochastic MGDA is biased because its weights depend on the same noisy gradients they
combine. MoCo tracks each task's gradient with a moving average y_k <- y_k - beta (y_k - g_k),
moves the weights by one projected step on the tracked MGDA objective,
lambda <- Pi_simplex(lambda - gamma (Y Y^T lambda + rho lambda)), and updates along d = Y^T lambda.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from taskloom.balancing.cagrad import project_simplex
from taskloom.balancing.gradient import MODES, GradientBalancer


def simplex_step(weights: Tensor, rows: Tensor | None, gradient_of: Callable[[Tensor], Tensor],
                 gamma: float) -> Tensor:
    """One projected gradient step on the simplex weights of the tasks ``rows`` (None: all), in place.

    With every task present this is lambda <- Pi_simplex(lambda - gamma grad). With some tasks
    absent from the batch, the present tasks' weights are renormalized onto their own simplex, take
    the step there and are written back at their old total mass (absent tasks keep theirs).
    Returns the present tasks' weights on their simplex (they sum to 1).
    """
    current = weights if rows is None else weights[rows]
    mass = current.sum()
    start = current / mass if float(mass) > 0 else torch.full_like(current, 1.0 / current.numel())
    moved = project_simplex(start - gamma * gradient_of(start))
    if rows is None:
        weights.copy_(moved)
    elif float(mass) > 0:
        weights[rows] = moved * mass
    return moved


def refuse_representation(name: str, mode: str) -> None:
    """Refuse ``mode="representation"`` for a method whose state is per-task parameter gradients across steps."""
    if mode == "representation":
        raise ValueError(
            f"{name} keeps per-task gradients across steps and cannot use representation gradients (they are per "
            "sample, of a different batch each step): set balancing.options.mode to 'parameters' (the default) "
            "or pick a method that allows it, such as sdmgrad or mgda_ub")
    if mode not in MODES:
        raise ValueError(f"balancing.options.mode must be one of {list(MODES)}, got {mode!r}")


class GradientMemory(GradientBalancer):
    """Base of methods that keep a K x P matrix of per-task gradients and simplex weights between steps.

    Buffers (saved in checkpoints): ``weights`` (K), ``memory`` (K x P, sized at the first step)
    and ``seen`` (K booleans: whether a task's row holds a gradient yet).
    """

    modes = ("parameters",)
    lazy_buffers = ("memory",)

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 task_chunk: int | None = None,
                 engine: str = "auto") -> None:
        refuse_representation(type(self).__name__.lower(), mode)
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
        k = len(self.task_names)
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.register_buffer("memory", torch.zeros((k, 0)))
        self.register_buffer("seen", torch.zeros(k, dtype=torch.bool))

    def check_task_chunk(self) -> None:
        """Refused: the method's state is every task's whole gradient."""
        raise ValueError(
            f"{type(self).__name__.lower()} cannot use balancing.options.task_chunk: it keeps every task's gradient "
            "of the shared parameters between steps (a K x P state), so chunking would not bound its memory; "
            "remove task_chunk")

    def _prepare(self, grads: Tensor, names: Sequence[str]) -> Tensor | None:
        """Size and place the buffers for ``grads``; the rows of ``names`` (None when all tasks are present)."""
        size = grads.shape[1]
        if self.memory.shape[1] != size:
            if bool(self.seen.any()):
                raise ValueError(f"{type(self).__name__.lower()} holds {self.memory.shape[1]} entries per task but "
                                 f"the gradients have {size}: the shared parameters changed; build a new balancer")
            self.memory = grads.new_zeros((len(self.task_names), size))
        if self.memory.device != grads.device or self.memory.dtype != grads.dtype:
            self.memory = self.memory.to(grads)
        if self.weights.device != grads.device or self.weights.dtype != grads.dtype:
            self.weights = self.weights.to(grads)
        if self.seen.device != grads.device:
            self.seen = self.seen.to(grads.device)
        if list(names) == self.task_names:
            return None
        return self.task_index(names).to(grads.device)


def moco_step(tracked: Tensor, grads: Tensor, weights: Tensor, beta: float = 0.5, gamma: float = 0.1,
              rho: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """One MoCo step: (new tracked Y, new simplex weights, direction Y^T lambda); inputs are left unchanged."""
    tracked = tracked - beta * (tracked - grads)
    gram = tracked @ tracked.T
    weights = simplex_step(weights.clone(), None, lambda w: gram @ w + rho * w, gamma)
    return tracked, weights, weights @ tracked


class MoCo(GradientMemory):
    """MoCo (Fernando et al. 2023): MGDA weights on tracked gradients, one projected step per batch.

    ``beta`` in (0, 1] is the tracking rate (1: no averaging), ``gamma`` > 0 the weights' step
    size, ``rho`` >= 0 their L2 regularization. A task's tracked gradient starts at its first
    gradient (not at zero, so early updates are not shrunk). A task absent from a batch keeps its
    tracked gradient and weight; the present tasks step on their own simplex (:func:`simplex_step`).
    Parameter gradients only (as LibMTL).
    """

    def __init__(self, task_names: Sequence[str], mode: str = "parameters", batched: bool | None = None,
                 beta: float = 0.5, gamma: float = 0.1, rho: float = 0.0, task_chunk: int | None = None,
                 engine: str = "auto") -> None:
        if not 0 < beta <= 1:
            raise ValueError(f"balancing.options.beta must be in (0, 1], got {beta!r}")
        if not gamma > 0:
            raise ValueError(f"balancing.options.gamma must be positive, got {gamma!r}")
        if not rho >= 0:
            raise ValueError(f"balancing.options.rho must be >= 0, got {rho!r}")
        super().__init__(task_names, mode=mode, batched=batched, task_chunk=task_chunk, engine=engine)
        self.beta, self.gamma, self.rho = float(beta), float(gamma), float(rho)

    def combine(self, grads: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        rows = self._prepare(grads, names)
        previous = self.memory if rows is None else self.memory[rows]
        seen = (self.seen if rows is None else self.seen[rows]).unsqueeze(1)
        tracked = torch.where(seen, previous - self.beta * (previous - grads), grads)
        if rows is None:
            self.memory.copy_(tracked)
            self.seen.fill_(True)
        else:
            self.memory[rows] = tracked
            self.seen[rows] = True
        gram = tracked @ tracked.T
        weights = simplex_step(self.weights, rows, lambda w: gram @ w + self.rho * w, self.gamma)
        return weights @ tracked, weights
