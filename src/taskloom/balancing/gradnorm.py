"""GradNorm (Chen et al., ICML 2018): learn task weights that balance gradient norms.

The weights are tuned so that each task's weighted gradient norm at the last shared
layer matches the average norm scaled by how slowly that task trains (its relative
inverse training rate to the power alpha). Only that one layer's per-task gradients
are computed, never those of the whole network.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from taskloom.balancing.base import Balancer, LossScale
from taskloom.balancing.jacobian import task_gradients
from taskloom.sharing.base import MultiTaskModule


def masked_adam_step(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    steps: Tensor,
    index: list[int] | slice,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """Adam (Kingma & Ba 2015) on the entries ``index`` of a 1-d ``param``, in place.

    The other entries and their moments stay untouched, so a task absent from a batch
    keeps its weight exactly (a plain optimizer would still move it through momentum).
    """
    beta1, beta2 = betas
    step = steps[index] + 1
    mean = beta1 * exp_avg[index] + (1 - beta1) * grad
    square = beta2 * exp_avg_sq[index] + (1 - beta2) * grad * grad
    update = (mean / (1 - beta1**step)) / ((square / (1 - beta2**step)).sqrt() + eps)
    param[index] = param[index] - lr * update
    exp_avg[index] = mean
    exp_avg_sq[index] = square
    steps[index] = step


def last_shared_layer(model: MultiTaskModule) -> nn.Module:
    """The module that owns the last of ``model.shared_parameters()``: GradNorm's default layer."""
    shared = model.shared_parameters()
    if not shared:
        raise ValueError(f"{type(model).__name__} has no shared parameters; GradNorm needs a shared layer")
    last = shared[-1]
    for module in model.modules():
        if any(p is last for p in module.parameters(recurse=False)):
            return module
    raise ValueError("could not find the module owning the last shared parameter; pass balancing.layer=<module name>")


class GradNorm(Balancer):
    """Loss weights ``w`` (summing to K) learned with GradNorm's gradient-norm loss.

    Each step: the model gets the gradient of ``sum_k w_k L_k`` (``w`` held fixed); with
    ``G_k = w_k ||grad_W L_k||`` at the last shared layer W, ``r_k`` the ratio of
    ``L_k / L_k(0)`` to its mean over the tasks, and target ``mean(G) r_k^alpha``, one
    Adam step (``lr``) on ``sum_k |G_k - target_k|`` updates ``w``, which is then
    renormalized. The weights and Adam state are buffers, saved in checkpoints.
    ``L_k(0)`` is task k's loss in the first batch that labels it. A task absent from a
    batch keeps its weight; the present tasks' weights keep their sum, so all sum to K.
    ``layer`` names the module of W (default: the owner of the last shared parameter).
    With ``alpha > 1`` the targets sum to more than the norms, and the weights stop moving
    once every task is below its target (Adam steps all weights alike; renormalizing undoes it).
    """

    def __init__(
        self,
        task_names: Sequence[str],
        alpha: float = 1.5,
        lr: float = 0.025,
        layer: str | None = None,
        batched: bool | None = None,
    ) -> None:
        super().__init__(task_names)
        if not alpha >= 0:
            raise ValueError(f"balancing.options.alpha must be non-negative, got {alpha!r}")
        if not lr > 0:
            raise ValueError(f"balancing.options.lr must be positive, got {lr!r}")
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.layer = layer
        self.batched = batched
        self._index = {name: i for i, name in enumerate(self.task_names)}
        count = len(self.task_names)
        self.register_buffer("task_weights", torch.ones(count))
        self.register_buffer("initial_losses", torch.full((count,), float("nan")))
        self.register_buffer("adam_exp_avg", torch.zeros(count))
        self.register_buffer("adam_exp_avg_sq", torch.zeros(count))
        self.register_buffer("adam_steps", torch.zeros(count))
        self._layer_cache: tuple[int, list[nn.Parameter]] | None = None

    def _layer_parameters(self, model: MultiTaskModule) -> list[nn.Parameter]:
        if self._layer_cache is not None and self._layer_cache[0] == id(model):
            return self._layer_cache[1]
        module = model.get_submodule(self.layer) if self.layer else last_shared_layer(model)
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not params:
            raise ValueError(f"GradNorm layer {self.layer or type(module).__name__!r} has no trainable parameters")
        self._layer_cache = (id(model), params)
        return params

    def _gradient_norms(self, losses: Tensor, params: list[nn.Parameter]) -> Tensor:
        """``||grad_W L_k||`` for every k: one batched backward (vmap) or one partial backward per task.

        Each backward stops at W. The loop is faster on CPU, where vmap's bookkeeping
        outweighs the saved calls; ``batched`` (default: not on CPU) picks the other path.
        """
        count = losses.shape[0]
        batched = self.batched if self.batched is not None else losses.device.type != "cpu"
        if self.communicator is not None:  # the norms of the global batch's gradients: one K x |W| all-reduce
            rows = task_gradients(list(losses.unbind()), params, batched=batched, retain_graph=True)
            return self.communicator.all_reduce_sum(rows).norm(dim=1)
        if batched:
            eye = torch.eye(count, device=losses.device, dtype=losses.dtype)
            grads = torch.autograd.grad(
                losses, params, eye, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
            squares = [g.reshape(count, -1).pow(2).sum(1) for g in grads if g is not None]
            return torch.stack(squares).sum(0).sqrt() if squares else losses.new_zeros(count)
        rows = []
        for k in range(count):
            grads = torch.autograd.grad(losses[k], params, retain_graph=True, allow_unused=True)
            squares = [g.pow(2).sum() for g in grads if g is not None]
            rows.append(torch.stack(squares).sum() if squares else losses.new_zeros(()))
        return torch.stack(rows).sqrt()

    def step_weights(self, names: Sequence[str]) -> tuple[list[int] | slice, Tensor]:
        """The entries of the tasks ``names`` (labelled in this step) and their weights, held fixed for the step."""
        unknown = [name for name in names if name not in self._index]
        if unknown:
            raise KeyError(f"GradNorm got losses for unknown tasks {unknown}; it was built for {self.task_names}")
        every = len(names) == len(self.task_names)
        index: list[int] | slice = slice(None) if every else [self._index[n] for n in names]
        weights = self.task_weights[index].clone()
        self._last_weights = dict(zip(names, weights.unbind()))
        return index, weights

    def backward(self, losses: Mapping[str, Tensor], model: MultiTaskModule, scale: LossScale | None = None) -> None:
        if not losses:
            return
        names = [name for name in self.task_names if name in losses]
        unknown = [name for name in losses if name not in self._index]
        index, weights = self.step_weights(names + unknown)
        stacked = torch.stack([losses[name] for name in names])
        layer = self._layer_parameters(model)
        total = (weights.to(stacked.dtype) * stacked).sum()
        if scale is None:
            norms = self._gradient_norms(stacked, layer).detach().to(weights.dtype)
            total.backward()
        else:  # fp16: norms of the scaled losses' gradients (no underflow), divided back; overflow skips the update
            factor = scale(torch.ones((), device=stacked.device)).to(weights.dtype)
            norms = self._gradient_norms(scale(stacked), layer).detach().to(weights.dtype) / factor
            scale(total).backward()
            if not bool(torch.isfinite(norms).all()):
                return
        self.update_weights(index, weights, stacked.detach(), norms)

    def update_weights(self, index: list[int] | slice, weights: Tensor, current: Tensor, norms: Tensor) -> None:
        """One Adam step of the weights ``index`` on GradNorm's loss, from the step's losses and gradient norms."""
        current = current.to(weights.dtype)
        initial = self.initial_losses[index]
        initial = torch.where(torch.isnan(initial), current, initial)
        self.initial_losses[index] = initial
        relative = current / initial.clamp_min(torch.finfo(initial.dtype).tiny)
        inverse_rate = relative / relative.mean()
        weighted_norms = weights * norms
        target = weighted_norms.mean() * inverse_rate.pow(self.alpha)
        grad = torch.sign(weighted_norms - target) * norms
        with torch.no_grad():
            masked_adam_step(
                self.task_weights, grad, self.adam_exp_avg, self.adam_exp_avg_sq, self.adam_steps, index, self.lr
            )
            updated = self.task_weights[index].clamp_min(1e-6)
            self.task_weights[index] = updated * (self._present_total(index) / updated.sum())

    def _present_total(self, index: list[int] | slice) -> Tensor | float:
        """What the present tasks' weights must sum to so that all K sum to K."""
        count = len(self.task_names)
        if isinstance(index, slice):
            return float(count)
        absent = torch.ones(count, dtype=torch.bool, device=self.task_weights.device)
        absent[index] = False
        return count - self.task_weights[absent].sum()
