"""LibMTL's Auto-Lambda (Liu, Johns & Davison, TMLR 2022) driven on a taskloom model, by LibMTL's own Trainer code.

A helper of the benchmarks, not part of taskloom. LibMTL runs Auto-Lambda inside its Trainer
(``train_bilevel``), not as a weighting class: each step, ``Trainer.bacth_forward_AutoLambda``
takes a half-size inner batch and a half-size outer batch (both from the TRAINING split), makes a
deep copy of the model, moves it one SGD step (the optimizer's learning rate) on the inner batch's
softmax-weighted loss, takes the gradient of the outer batch's summed losses there, estimates the
mixed second derivative by finite differences of the inner batch's weighted loss at
theta +- eps * that gradient (eps = 0.01 / its norm), steps its task-weight logits (``_prepare_tw``'s
``TW`` module, softmax weights starting at 1/K, Adam at ``outer_lr``), then draws a third, full-size
training batch and steps the model on its softmax-weighted loss.

:class:`LibMTLAutoLambda` is an object with exactly the attributes that step reads (``model``,
``tw`` and ``tw_optimizer`` built by LibMTL's own ``_prepare_tw``, ``optimizer``, ``scheduler``
None, ``kwargs['weight_args']``, ``forward4loss``, ``multi_input`` False, ``task_num``, a meter that
records nothing, and ``_process_data`` handing over the full batch it is given); LibMTL's unbound
functions run on it. Nothing of LibMTL is copied: it is imported from ``PYTHONPATH`` at run time.
LibMTL's command-line default ``inner_step`` 5 fails the step's own ``assert inner_step == 1``, so
``inner_step`` is 1; the other hyper-parameters are LibMTL's defaults (``outer_lr`` 1e-3).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from _libmtl import LossesOf, libmtl_defaults

#: taskloom method name -> LibMTL bilevel method its Trainer runs (``train_bilevel``)
BILEVEL: dict[str, str] = {"autolambda": "AutoLambda"}
#: the only inner step count LibMTL's Auto-Lambda step accepts (its command-line default, 5, fails the assert)
INNER_STEP = 1
#: one sample: the inputs and the task losses of the model's outputs on them (``task_name`` order)
Sample = tuple[Any, LossesOf]


class _SilentMeter:
    """LibMTL's performance meter where it is only fed training predictions: records nothing."""

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


class LibMTLAutoLambda:
    """A taskloom ``MultiTaskModel`` trained by LibMTL's Auto-Lambda step (``Trainer.bacth_forward_AutoLambda``).

    ``make_optimizer(model_parameters, [])`` builds the model's optimizer (default: AdamW, lr 1e-3);
    its first group's learning rate is LibMTL's inner (lookahead) step. The task weights are
    LibMTL's ``TW`` module with its own Adam. :meth:`step` takes one step on three samples.
    """

    #: batches one step takes: inner and outer (half size) and the full one the model is updated on
    samples = 3

    def __init__(self, model: nn.Module, kwargs: Mapping[str, Any] | None = None,
                 make_optimizer: Callable[[list, list], torch.optim.Optimizer] | None = None) -> None:
        from LibMTL.trainer import Trainer

        if not hasattr(model, "heads"):
            raise TypeError("LibMTLAutoLambda needs a multi-task model with .heads (MultiTaskModel)")
        self._trainer = Trainer
        self.model = model
        self.name = "AutoLambda"
        self.task_name = list(model.heads)
        self.task_num = len(self.task_name)
        self.device = next(model.parameters()).device
        self.multi_input = False
        self.scheduler = None  # the step then reads its inner learning rate from the optimizer
        self.meter = _SilentMeter()
        weight_args = {**libmtl_defaults("AutoLambda"), "inner_step": INNER_STEP, **(kwargs or {})}
        self.kwargs = {"weight_args": weight_args, "arch_args": {}}
        parameters = list(model.parameters())
        self.optimizer = (torch.optim.AdamW(parameters, lr=1e-3) if make_optimizer is None
                          else make_optimizer(parameters, []))
        Trainer._prepare_tw(self, weight_args["outer_lr"])

    @property
    def task_names(self) -> list[str]:
        return self.task_name

    @property
    def options(self) -> dict[str, Any]:
        """The ``weight_args`` the step runs with."""
        return dict(self.kwargs["weight_args"])

    def task_weights(self) -> Tensor:
        """The current task weights (softmax of LibMTL's ``TW`` logits), in ``task_name`` order."""
        return torch.softmax(self.tw.weights.detach(), dim=-1)

    # -- what LibMTL's Trainer code calls on its Trainer ------------------------------------
    def forward4loss(self, model: nn.Module, inputs: Any, gts: LossesOf, return_preds: bool = False) -> Any:
        return self._trainer.forward4loss(self, model, inputs, gts, return_preds)

    def process_preds(self, preds: Any, task_name: str | None = None) -> Any:
        return self._trainer.process_preds(self, preds, task_name)

    def _compute_loss(self, preds: Mapping[str, Tensor], gts: LossesOf, task_name: str | None = None) -> Tensor:
        """The Trainer's zero tensor filled task by task; ``gts`` gives taskloom's masked task losses."""
        losses = torch.zeros(self.task_num, device=self.device)
        for i, loss in enumerate(gts(preds)):
            losses[i] = loss
        return losses

    def _process_data(self, loader: Iterator[Sample]) -> Sample:
        return next(loader)

    # -- the benchmark's side ------------------------------------------------------------------
    def step(self, inner: Sample, outer: Sample, full: Sample) -> None:
        """One LibMTL Auto-Lambda step: weights learned on ``inner`` and ``outer``, the model updated on ``full``."""
        self._trainer.bacth_forward_AutoLambda(self, inner[0], inner[1], outer[0], outer[1], iter([full]))
