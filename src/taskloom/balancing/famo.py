"""FAMO, fast adaptive multitask optimization (Liu, Liu, Stone & Liu, NeurIPS 2023).

Task weights come from learned logits that are moved, after every step, toward the
tasks whose log-loss fell least, so all tasks' losses decrease at similar rates at the
cost of one scalar loss per task (no per-task gradients).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from taskloom.balancing.base import LossWeighting
from taskloom.balancing.gradnorm import masked_adam_step

OPTIMIZERS = ("adam", "sgd")


class FAMO(LossWeighting):
    """Update ``c sum_k z_k grad L_k / L_k`` with ``z = softmax(xi)``, ``c = 1 / sum_k z_k / L_k``.

    After the optimizer step the trainer passes the same batch's new losses to
    ``post_step``; with ``delta_k = log L_k(before) - log L_k(after)`` the logits move by
    ``xi <- xi - lr (J^T delta + decay xi)`` where J is the softmax Jacobian: one plain
    gradient step as in the paper's Algorithm 1 (``optimizer="sgd"``) or an Adam step as
    in the authors' code (default). ``eps`` is added to every loss before the ratio and
    the log. A task absent from a batch is left out of the softmax and keeps its logit and
    Adam state; logits and Adam state are buffers, saved in checkpoints.
    """

    needs_post_step_losses = True

    def __init__(
        self,
        task_names: Sequence[str],
        lr: float = 0.025,
        decay: float = 1e-3,
        optimizer: str = "adam",
        eps: float = 1e-8,
    ) -> None:
        super().__init__(task_names)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"balancing.options.optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        if not lr > 0:
            raise ValueError(f"balancing.options.lr must be positive, got {lr!r}")
        if not decay >= 0:
            raise ValueError(f"balancing.options.decay must be non-negative, got {decay!r}")
        self.lr, self.decay, self.optimizer, self.eps = float(lr), float(decay), optimizer, float(eps)
        self._index = {name: i for i, name in enumerate(self.task_names)}
        count = len(self.task_names)
        self.register_buffer("logits", torch.zeros(count))
        self.register_buffer("adam_exp_avg", torch.zeros(count))
        self.register_buffer("adam_exp_avg_sq", torch.zeros(count))
        self.register_buffer("adam_steps", torch.zeros(count))
        self._before: dict[str, Tensor] = {}

    def _present(self, losses: Mapping[str, Tensor]) -> tuple[list[str], list[int] | slice]:
        unknown = [name for name in losses if name not in self._index]
        if unknown:
            raise KeyError(f"FAMO got losses for unknown tasks {unknown}; it was built for {self.task_names}")
        names = [name for name in self.task_names if name in losses]
        if len(names) == len(self.task_names):
            return names, slice(None)
        return names, [self._index[name] for name in names]

    def weights(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The weight on each loss: ``c z_k / (L_k + eps)``, computed without gradient."""
        names, index = self._present(losses)
        stacked = torch.stack([losses[name].detach() for name in names]).to(self.logits.dtype) + self.eps
        inverse = torch.softmax(self.logits[index], dim=0) / stacked
        return dict(zip(names, (inverse / inverse.sum()).unbind()))

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        self._before = {name: loss.detach() for name, loss in losses.items()}
        return super().combine(losses)

    def post_step(self, losses: Mapping[str, Tensor]) -> None:
        both = {name: loss for name, loss in losses.items() if name in self._before}
        if not both:
            return
        names, index = self._present(both)
        before = torch.stack([self._before[name] for name in names]).to(self.logits.dtype)
        after = torch.stack([both[name].detach() for name in names]).to(self.logits.dtype)
        delta = torch.log(before + self.eps) - torch.log(after + self.eps)
        logits = self.logits[index]
        z = torch.softmax(logits, dim=0)
        grad = z * (delta - (z * delta).sum()) + self.decay * logits
        if self.optimizer == "sgd":
            self.logits[index] = logits - self.lr * grad
        else:
            moments = (self.adam_exp_avg, self.adam_exp_avg_sq, self.adam_steps)
            masked_adam_step(self.logits, grad, *moments, index, self.lr)
        self._before = {}
