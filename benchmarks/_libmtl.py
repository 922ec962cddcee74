"""LibMTL's weighting methods driven on a taskloom model, one step the way LibMTL's Trainer takes it.

A helper of the benchmarks, not part of taskloom. LibMTL (https://github.com/median-research-group/LibMTL)
mixes a weighting class into its architecture class, so the weighting reaches the shared
parameters through ``get_share_params()`` and friends. :class:`LibMTLMethod` supplies those
for a :class:`taskloom.sharing.hard.MultiTaskModel` (trunk = LibMTL's encoder, heads = its
decoders) and runs a step as ``Trainer.train_singlelevel`` does: forward, the per-task losses
in one tensor (each read to the host, as the Trainer's meter does), ``zero_grad(set_to_none=False)``,
``weighting.backward(losses, **weight_args)``, ``optimizer.step()`` and, for FAMO, a second
forward for ``update_w``. What the new methods need, as the Trainer supplies it:

- STCH reads ``self.epoch`` (log-loss warm-up for ``STCH_warmup_epoch`` epochs, the nadir point averaged
  over the warm-up's last epoch) and prints that point once: the print is kept off stdout (JSON);
- ExcessMTL keeps its accumulated squared gradients and first estimates on the weighting object
  across steps and zeroes ``self.encoder`` (the trunk);
- MoCo sizes its tracked gradients from ``get_share_params()`` when built, and counts its steps;
- MoDo and SDMGrad take three batches per step (``SAMPLES``): the losses are a 3 x K tensor, one
  row per batch, as ``Trainer.train_singlelevel`` stacks them; MoDo divides the heads' gradients
  by 3 through ``self.decoders`` (the taskloom heads). SDMGrad's simplex projection calls
  ``np.alltrue``, gone from NumPy 2: it is aliased to ``np.all`` (same meaning) when missing.

Auto-Lambda, which LibMTL runs in its Trainer's bilevel loop rather than as a weighting class, is
driven by ``_libmtl_bilevel.py``. The hyper-parameters are LibMTL's own defaults (its ``config.prepare_args``)
unless overridden. Needs a LibMTL source checkout on ``PYTHONPATH`` (the PyPI release does not
import); :func:`libmtl_unavailable` says why when it is not there.
"""
from __future__ import annotations

import contextlib
import functools
import io
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

#: taskloom method name -> (LibMTL weighting class, LibMTL rep_grad when it has only one mode, else None)
METHODS: dict[str, tuple[str, bool | None]] = {
    "equal": ("EW", False), "uncertainty": ("UW", False), "dwa": ("DWA", False), "rlw": ("RLW", False),
    "gls": ("GLS", False), "gradnorm": ("GradNorm", None), "famo": ("FAMO", False), "mgda": ("MGDA", None),
    "mgda_ub": ("MGDA", True), "pcgrad": ("PCGrad", None), "gradvac": ("GradVac", None),
    "cagrad": ("CAGrad", None), "nashmtl": ("Nash_MTL", None), "imtl_g": ("IMTL", None),
    "graddrop": ("GradDrop", True), "alignedmtl": ("Aligned_MTL", None), "upgrad": ("UPGrad", None),
    "dbmtl": ("DB_MTL", None), "fairgrad": ("FairGrad", False), "stch": ("STCH", False),
    "excessmtl": ("ExcessMTL", False), "moco": ("MoCo", False), "modo": ("MoDo", False), "sdmgrad": ("SDMGrad", False),
}
#: LibMTL methods whose Trainer draws several batches per step (MoDo's double sampling plus the update
#: sample; SDMGrad's two Gram samples plus the update sample): ``step`` then takes one batch per sample
SAMPLES: dict[str, int] = {"MoDo": 3, "SDMGrad": 3}
#: LibMTL's loss-level methods: in representation mode their heads see a detached copy of the
#: representation and nothing is sent back into the trunk, which then never trains
LOSS_LEVEL = {"EW", "UW", "DWA", "RLW", "GLS", "FAMO"}
NO_TRUNK_GRADIENT = ("LibMTL loss-level methods in representation mode leave the trunk without a gradient "
                     "(heads see a detached copy of the representation): not a mode to time")


def libmtl_unavailable() -> str | None:
    """None when LibMTL's weighting methods import, else the reason, with what to do."""
    try:
        import LibMTL.config  # noqa: F401
        import LibMTL.weighting  # noqa: F401
    except Exception as error:  # ImportError, or the stale PyPI release failing inside its own imports
        return (f"LibMTL not importable ({type(error).__name__}: {error}); its PyPI release is stale and does "
                "not import: put a source checkout on PYTHONPATH (PYTHONPATH=/path/to/LibMTL)")
    return None


@functools.lru_cache(maxsize=None)
def libmtl_defaults(weighting: str) -> dict[str, Any]:
    """The ``weight_args`` LibMTL's own command line builds for ``weighting`` with no flags given."""
    from LibMTL.config import LibMTL_args, prepare_args

    params = LibMTL_args.parse_args(["--weighting", weighting])
    with contextlib.redirect_stdout(io.StringIO()):  # prepare_args prints the configuration
        kwargs, _, _ = prepare_args(params)
    return dict(kwargs["weight_args"])


@functools.lru_cache(maxsize=None)
def _hosted(weighting: str) -> type:
    """LibMTL's weighting class ``weighting`` with what its architecture classes give it, over a taskloom model."""
    import LibMTL.weighting as methods

    if weighting == "SDMGrad" and not hasattr(np, "alltrue"):  # NumPy 2 removed the alias; same function
        np.alltrue = np.all
    base = getattr(methods, weighting, None)
    if not (isinstance(base, type) and issubclass(base, methods.AbsWeighting)):
        raise ValueError(f"LibMTL has no weighting method {weighting!r}")

    class Hosted(base):
        def __init__(self, model: nn.Module, rep_grad: bool, device: torch.device) -> None:
            super().__init__()
            self.__dict__["model"] = model  # not a submodule: parameters() are the method's own
            self.task_name = list(model.heads)
            self.task_num = len(self.task_name)
            self.rep_grad = rep_grad
            self.device = device
            self.rep, self.rep_tasks = None, {}
            self.epoch, self.epochs = 0, 1
            self.train_loss_buffer = np.zeros((self.task_num, 1))
            self.init_param()

        @property
        def decoders(self) -> nn.ModuleDict:  # MoDo rescales the heads' gradients
            return self.model.heads

        @property
        def encoder(self) -> nn.Module:  # GradVac's per-layer grouping walks the encoder's modules
            return self.model.trunk

        def get_share_params(self) -> Iterable[nn.Parameter]:
            return self.model.trunk.parameters()

        def zero_grad_share_params(self) -> None:
            self.model.trunk.zero_grad(set_to_none=False)

        def forward(self, inputs: Any) -> dict[str, Tensor]:
            representation = self.model.trunk(inputs)
            if not self.rep_grad:
                return {name: self.model.heads[name](representation) for name in self.task_name}
            # representation mode: every head reads its own leaf copy, whose .grad is that task's gradient
            self.rep, self.rep_tasks = representation, {}
            outputs = {}
            for name in self.task_name:
                leaf = representation.detach().clone().requires_grad_(True)
                self.rep_tasks[name] = leaf
                outputs[name] = self.model.heads[name](leaf)
            return outputs

    Hosted.__name__ = Hosted.__qualname__ = f"{weighting}OnTaskloom"
    return Hosted


LossesOf = Callable[[Mapping[str, Tensor]], Sequence[Tensor]]


class LibMTLMethod:
    """A taskloom ``MultiTaskModel`` trained by LibMTL's weighting ``weighting`` (e.g. ``"PCGrad"``).

    ``make_optimizer(model_parameters, method_parameters)`` builds the optimizer (default:
    AdamW, lr 1e-3, over both); the method's own parameters (UW's, GradNorm's and IMTL's
    loss scales) are trained by it, as in LibMTL, where they belong to the model.
    ``rep_grad`` is LibMTL's representation mode. :meth:`step` takes one training step;
    :meth:`set_epoch` and :meth:`end_epoch` keep the epoch counter and the per-epoch mean
    losses (``train_loss_buffer``) that DWA and GradNorm read.
    """

    def __init__(self, model: nn.Module, weighting: str, rep_grad: bool = False,
                 kwargs: Mapping[str, Any] | None = None,
                 make_optimizer: Callable[[list, list], torch.optim.Optimizer] | None = None,
                 read_losses: bool = True) -> None:
        if not hasattr(model, "trunk") or not hasattr(model, "heads"):
            raise TypeError("LibMTLMethod needs a hard-sharing model with .trunk and .heads (MultiTaskModel)")
        device = next(model.parameters()).device
        self.model = model
        self.name = weighting
        self.rep_grad = rep_grad
        self.weighting = _hosted(weighting)(model, rep_grad, device).to(device)
        self.kwargs = {**libmtl_defaults(weighting), **(kwargs or {})}
        self.read_losses = read_losses
        own = list(self.weighting.parameters())
        if make_optimizer is None:
            self.optimizer = torch.optim.AdamW(list(model.parameters()) + own, lr=1e-3)
        else:
            self.optimizer = make_optimizer(list(model.parameters()), own)
        self._sums = torch.zeros(len(self.weighting.task_name), dtype=torch.float64)
        self._rows = 0

    @property
    def task_names(self) -> list[str]:
        return self.weighting.task_name

    def begin(self, epochs: int) -> None:
        """Start of training: an empty loss buffer for ``epochs`` epochs (the Trainer's ``train_singlelevel``)."""
        self.weighting.epochs = epochs
        self.weighting.train_loss_buffer = np.zeros((len(self.task_names), epochs))

    def set_epoch(self, epoch: int) -> None:
        """The 0-based epoch the next steps belong to."""
        self.weighting.epoch = epoch
        self._sums.zero_()
        self._rows = 0

    def end_epoch(self) -> np.ndarray:
        """Record this epoch's mean training losses (per row, as LibMTL's meter averages them)."""
        means = (self._sums / max(1, self._rows)).numpy()
        self.weighting.train_loss_buffer[:, self.weighting.epoch] = means
        return means

    def losses(self, inputs: Any, losses_of: LossesOf) -> Tensor:
        outputs = self.weighting(inputs)
        per_task = losses_of(outputs)
        losses = torch.zeros(len(self.task_names), device=self.weighting.device)
        for i, loss in enumerate(per_task):  # the Trainer fills a zero tensor task by task
            losses[i] = loss
        if self.read_losses:
            values = [loss.item() for loss in per_task]  # its meter records every task's loss.item()
            rows = len(next(iter(outputs.values())))
            self._sums += torch.tensor(values, dtype=torch.float64) * rows
            self._rows += rows
        return losses

    @property
    def samples(self) -> int:
        """Batches one step takes (3 for MoDo and SDMGrad, else 1)."""
        return SAMPLES.get(self.name, 1)

    def step(self, inputs: Any, losses_of: LossesOf, more: Sequence[tuple[Any, LossesOf]] = ()) -> Tensor:
        """One LibMTL training step; ``losses_of(outputs)`` gives the task losses in ``task_names`` order.

        ``more``: the further ``(inputs, losses_of)`` samples of a method that takes :attr:`samples`
        batches per step; its losses are then stacked samples x tasks, as LibMTL's Trainer does.
        """
        if len(more) != self.samples - 1:
            raise ValueError(f"LibMTL {self.name} takes {self.samples} batch(es) per step, got {1 + len(more)}")
        losses = self.losses(inputs, losses_of)
        if more:
            losses = torch.stack([losses] + [self.losses(x, of) for x, of in more])
        self.optimizer.zero_grad(set_to_none=False)
        with contextlib.redirect_stdout(io.StringIO()):  # STCH prints its nadir point
            self.weighting.backward(losses, **self.kwargs)
        self.optimizer.step()
        if self.name == "FAMO":
            with torch.no_grad():
                self.weighting.update_w(self.losses(inputs, losses_of).detach())
        return losses.detach()


def libmtl_step(model: nn.Module, weighting: str, losses_of: Callable[[Any, Mapping[str, Tensor]], Sequence[Tensor]],
                rep_grad: bool = False, kwargs: Mapping[str, Any] | None = None,
                make_optimizer: Callable[[list, list], torch.optim.Optimizer] | None = None,
                epoch: int = 2) -> Callable[[tuple[Any, Any]], None]:
    """``step((inputs, targets))``: one LibMTL training step of ``weighting`` on ``model``, for timing.

    ``losses_of(targets, outputs)`` gives the task losses. The method is placed at ``epoch``
    (0-based) with a loss history of ones, so DWA and GradNorm take their adaptive path
    (both run as equal weighting in their first epochs). MoDo and SDMGrad, which take three
    batches per step, get the same batch three times (the cost of a step, not its statistics).
    """
    method = LibMTLMethod(model, weighting, rep_grad=rep_grad, kwargs=kwargs, make_optimizer=make_optimizer)
    method.begin(epoch + 1)
    method.weighting.train_loss_buffer[:] = 1.0
    method.weighting.epoch = epoch

    def step(batch: tuple[Any, Any]) -> None:
        inputs, targets = batch

        def of(outputs):
            return losses_of(targets, outputs)

        method.step(inputs, of, [(inputs, of)] * (method.samples - 1))

    step.method = method  # type: ignore[attr-defined]
    return step
