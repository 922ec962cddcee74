"""Auto-Lambda (Liu, Johns & Davison, TMLR 2022, "Auto-Lambda: disentangling dynamic task relationships").

Task weights lambda are learned so that one virtual SGD step of the model on the weighted
training loss, theta' = theta - alpha sum_k lambda_k grad L_k(theta), lowers the primary tasks'
loss on a validation batch: a one-step-lookahead bilevel gradient as in DARTS (Liu et al. 2019).
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from taskloom.balancing.base import Balancer, LossScale
from taskloom.balancing.gradnorm import masked_adam_step
from taskloom.balancing.jacobian import task_gradients, write_gradient
from taskloom.sharing.base import MultiTaskModule, unique

log = logging.getLogger(__name__)

#: losses of the tasks labelled in the next validation batch, computed with the given model
ValidationLosses = Callable[[MultiTaskModule], Mapping[str, Tensor]]
OPTIMIZERS = ("adam", "sgd")


class AutoLambda(Balancer):
    """Auto-Lambda: weights moved by the meta-gradient of the primary tasks' validation loss.

    The meta-gradient is d L_val(theta') / d lambda_k = -alpha grad L_k(theta) . grad L_val(theta').
    The paper and DARTS approximate this product by finite differences of the training losses at
    theta +- eps grad L_val; the training loss is linear in lambda, so the mixed derivative is
    exactly grad L_k(theta), and here the product is taken with the K per-task gradients, which
    the step needs anyway (its update is sum_k lambda_k grad L_k, written directly): exact, and no
    second forward of the training batch. ``primary`` names the tasks whose validation loss counts
    (default: all; the others are auxiliaries). ``lookahead_lr`` is alpha, ``lr`` the weights'
    step (``optimizer`` adam, as the authors' code, or sgd), ``weight_init`` their start; weights
    are kept >= 0. The trainer gives validation batches through :meth:`attach_validation` (it
    checks ``needs_validation``; the test split is never used). A step whose validation batch
    labels no primary task leaves the weights alone; a task absent from the training batch keeps
    its weight and Adam state, and its own parameters get no gradient. The weights, Adam moments and
    the count of validation batches drawn are buffers, saved in checkpoints (so a resumed run's
    validation stream continues where it stopped).
    """

    needs_validation = True

    def __init__(self, task_names: Sequence[str], primary: Sequence[str] | None = None, lookahead_lr: float = 0.1,
                 lr: float = 1e-3, weight_init: float = 1.0, optimizer: str = "adam") -> None:
        super().__init__(task_names)
        if primary is None:
            primary = list(self.task_names)
        if isinstance(primary, str) or not list(primary):
            raise ValueError(f"balancing.options.primary must be a non-empty list of task names, got {primary!r}")
        unknown = [name for name in primary if name not in self.task_names]
        if unknown:
            raise ValueError(f"balancing.options.primary names unknown tasks {unknown}; the tasks are "
                             f"{self.task_names}")
        if not lookahead_lr > 0:
            raise ValueError(f"balancing.options.lookahead_lr must be positive, got {lookahead_lr!r}")
        if not lr > 0:
            raise ValueError(f"balancing.options.lr must be positive, got {lr!r}")
        if not weight_init >= 0:
            raise ValueError(f"balancing.options.weight_init must be >= 0, got {weight_init!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"balancing.options.optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        self.primary = list(primary)
        self.lookahead_lr, self.lr, self.optimizer = float(lookahead_lr), float(lr), optimizer
        self._index = {name: i for i, name in enumerate(self.task_names)}
        k = len(self.task_names)
        self.register_buffer("weights", torch.full((k,), float(weight_init)))
        self.register_buffer("adam_exp_avg", torch.zeros(k))
        self.register_buffer("adam_exp_avg_sq", torch.zeros(k))
        self.register_buffer("adam_steps", torch.zeros(k))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))  # validation batches drawn so far
        self._validation: ValidationLosses | None = None

    def attach_validation(self, validation_losses: ValidationLosses) -> None:
        """Where validation losses come from: a function of the model giving the next validation batch's losses."""
        self._validation = validation_losses

    def validation_draws(self) -> int:
        """How many validation batches this balancer has drawn (saved, so a resumed stream skips them)."""
        return int(self.draws)

    def check_data_parallel(self) -> None:
        """Refused for now: the lookahead would need every rank's validation gradient."""
        raise ValueError("autolambda does not support data-parallel training yet; train on one process")

    def _names(self, losses: Mapping[str, Tensor]) -> list[str]:
        unknown = [name for name in losses if name not in self._index]
        if unknown:
            raise KeyError(f"AutoLambda got losses for unknown tasks {unknown}; it was built for {self.task_names}")
        return [name for name in self.task_names if name in losses]

    def _trained_parameters(self, model: MultiTaskModule, names: list[str]) -> list[Tensor]:
        """The trainable parameters, less the own parameters of tasks unlabelled in the batch (left without .grad)."""
        absent = [n for n in self.task_names if n not in names]
        own = getattr(model, "task_parameters", None)
        if not absent or not callable(own):
            return unique(model.parameters())
        skip = {id(p) for n in absent for p in own(n)}
        return [p for p in unique(model.parameters()) if id(p) not in skip]

    def meta_gradient(self, losses: Mapping[str, Tensor], model: MultiTaskModule) -> dict[str, float]:
        """The meta-gradient of the primary validation loss for each training task (no update made)."""
        names = self._names(losses)
        parameters = self._trained_parameters(model, names)
        grads = task_gradients([losses[n] for n in names], parameters, retain_graph=True)
        meta = self._meta_gradient(grads, names, parameters, model)
        return {} if meta is None else dict(zip(names, meta.tolist()))

    def _meta_gradient(self, grads: Tensor, names: list[str], parameters: list[Tensor],
                       model: MultiTaskModule) -> Tensor | None:
        if self._validation is None:
            raise ValueError("autolambda needs validation batches during training: train with "
                             "Trainer.fit(train, val) (a config with a validation split), or call "
                             "balancer.attach_validation(fn) in your own loop")
        index = [self._index[n] for n in names]
        step = self.lookahead_lr * (self.weights[index].to(grads) @ grads)
        saved = [p.detach().clone() for p in parameters]
        buffers = [b.detach().clone() for b in model.buffers()]  # e.g. batch-norm statistics of the lookahead
        try:
            with torch.no_grad():
                write_parameters(parameters, [s.reshape(-1) for s in saved], -step)
            validation = self._validation(model)
            self.draws += 1
            primary = [validation[n] for n in self.primary if n in validation]
            if not primary:
                log.debug("autolambda: the validation batch labels no primary task; weights unchanged")
                return None
            total = torch.stack([loss.reshape(()) for loss in primary]).sum()
            pieces = torch.autograd.grad(total, parameters, allow_unused=True)
            lookahead = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).to(grads)
                                   for g, p in zip(pieces, parameters)])
        finally:
            with torch.no_grad():
                for parameter, value in zip(parameters, saved):
                    parameter.copy_(value)
                for buffer, value in zip(model.buffers(), buffers):
                    buffer.copy_(value)
        return -self.lookahead_lr * (grads @ lookahead)

    def backward(self, losses: Mapping[str, Tensor], model: MultiTaskModule, scale: LossScale | None = None) -> None:
        names = self._names(losses)
        if not names:
            return
        parameters = self._trained_parameters(model, names)
        values = [losses[n] for n in names]
        grads = task_gradients(values, parameters)
        meta = self._meta_gradient(grads, names, parameters, model)
        index = [self._index[n] for n in names]
        if meta is not None:
            meta = meta.to(self.weights)
            if self.optimizer == "sgd":
                self.weights[index] = self.weights[index] - self.lr * meta
            else:
                masked_adam_step(self.weights, meta, self.adam_exp_avg, self.adam_exp_avg_sq, self.adam_steps,
                                 index, self.lr)
            self.weights.clamp_(min=0)
        weights = self.weights[index]
        self._last_weights = dict(zip(names, weights.unbind()))
        update = weights.to(grads) @ grads
        if scale is not None:  # fp16: the scaler expects scaled gradients
            update = update * scale(torch.ones((), device=update.device, dtype=update.dtype))
        write_gradient(parameters, update)


def write_parameters(parameters: Sequence[Tensor], flats: Sequence[Tensor], shift: Tensor) -> None:
    """Set each parameter to its flat value plus its slice of the P-vector ``shift`` (in place, no grad)."""
    offset = 0
    for parameter, flat in zip(parameters, flats):
        n = parameter.numel()
        parameter.copy_((flat + shift[offset:offset + n].to(flat)).view_as(parameter))
        offset += n
