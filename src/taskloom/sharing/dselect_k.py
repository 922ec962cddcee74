"""DSelect-k (Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong & Chi 2021, "DSelect-k: differentiable
selection in the mixture of experts with applications to multi-task learning", NeurIPS 2021): MMoE-like shared
experts, each task's gate a softmax mix of k selectors that each pick one expert through smooth-step binary codes."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from taskloom.sharing.checkpointing import run_trunk
from taskloom.sharing.layers import input_width, output_width
from taskloom.sharing.mmoe import mix
from taskloom.sharing.parameters import Reach, ReachSplit, params
from taskloom.task import Task


def smooth_step(t: Tensor, gamma: float) -> Tensor:
    """S(t): 0 for t <= -gamma/2, 1 for t >= gamma/2, -2/gamma^3 t^3 + 3/(2 gamma) t + 1/2 between (eq. 2);
    continuous with a continuous first derivative, exactly 0 or 1 outside (-gamma/2, gamma/2)."""
    cubic = -2.0 / gamma ** 3 * t ** 3 + 3.0 / (2.0 * gamma) * t + 0.5
    return torch.where(t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), cubic))


def binary_codes(num_experts: int) -> Tensor:
    """(num_experts, m) bits: row i is expert i's binary code, least significant bit first."""
    m = int(math.log2(num_experts))
    return torch.tensor([[(i >> b) & 1 for b in range(m)] for i in range(num_experts)], dtype=torch.float32)


def selector_weights(z: Tensor, codes: Tensor, gamma: float) -> Tensor:
    """r(z)_i = prod_b (S(z_b) if bit b of i is 1 else 1 - S(z_b)): weights over the experts that sum to 1,
    one-hot when every |z_b| >= gamma/2. ``z`` is (..., m); the result (..., num_experts)."""
    s = smooth_step(z, gamma).unsqueeze(-2)
    return torch.where(codes.bool(), s, 1 - s).prod(-1)


class DSelectGate(nn.Module):
    """One task's gate: k selectors (logits z, (k, m)) mixed by softmax(alpha) over the k selectors.

    ``in_features=None`` gives the static gate (z and alpha are parameters, the paper's default for multi-task
    learning); an int makes z and alpha linear functions of the flattened input (per-example gate).
    """

    def __init__(self, num_experts: int, k: int, gamma: float, in_features: int | None = None) -> None:
        super().__init__()
        self.k, self.gamma = k, gamma
        self.register_buffer("codes", binary_codes(num_experts), persistent=False)
        m = self.codes.shape[1]
        if in_features is None:
            self.z = nn.Parameter(torch.empty(k, m).uniform_(-gamma / 2, gamma / 2))
            self.alpha = nn.Parameter(torch.empty(k).uniform_(-0.05, 0.05))
            self.linear = None
        else:
            self.linear = nn.Linear(in_features, k * m + k)

    def logits(self, inputs: Any = None) -> tuple[Tensor, Tensor]:
        """z (k, m) and alpha (k,) for the static gate, (N, k, m) and (N, k) per example."""
        if self.linear is None:
            return self.z, self.alpha
        out = self.linear(inputs.flatten(1))
        k, m = self.k, self.codes.shape[1]
        return out[:, : k * m].reshape(-1, k, m), out[:, k * m:]

    def selectors(self, inputs: Any = None) -> Tensor:
        """Each selector's weights over the experts: (k, E) static, (N, k, E) per example."""
        z, _ = self.logits(inputs)
        return selector_weights(z, self.codes, self.gamma)

    def weights(self, inputs: Any = None) -> Tensor:
        """sum_c softmax(alpha)_c r(z_c): (E,) for the static gate, (N, E) per example."""
        z, alpha = self.logits(inputs)
        return (torch.softmax(alpha, dim=-1).unsqueeze(-1) * selector_weights(z, self.codes, self.gamma)).sum(-2)

    def forward(self, inputs: Any) -> Tensor:
        """Weights over the experts for each example, (N, E)."""
        weights = self.weights(inputs)
        return weights.expand(_batch_size(inputs), -1) if weights.dim() == 1 else weights

    def entropy(self) -> Tensor:
        """Sum over the k selectors of the entropy of r(z_c) (the static gate's regularizer, section 4)."""
        r = self.selectors()
        return -(r * torch.log(r.clamp_min(1e-12))).sum()


def _batch_size(inputs: Any) -> int:
    if isinstance(inputs, Tensor):
        return inputs.shape[0]
    if isinstance(inputs, dict):
        return _batch_size(next(iter(inputs.values())))
    if isinstance(inputs, (list, tuple)):
        return _batch_size(inputs[0])
    raise TypeError(f"dselect_k: cannot read the batch size of inputs of type {type(inputs).__name__}")


class DSelectK(ReachSplit):
    """Shared experts; task t's head reads sum_i w_t(x)_i f_i(x) with w_t a DSelect-k gate (Hazimeh et al. 2021)."""

    adversarial_input = "heads"
    checkpointable = True

    def __init__(self, experts: Sequence[nn.Module], gates: dict[str, DSelectGate], heads: dict[str, nn.Module],
                 entropy: float = 0.0) -> None:
        super().__init__()
        self.experts = nn.ModuleList(list(experts))
        self.gates = nn.ModuleDict(gates)
        self.heads = nn.ModuleDict({n: heads[n] for n in gates})
        self.task_names = list(self.gates)
        self.entropy = entropy

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        outputs = [run_trunk(expert, inputs, self.checkpointing) for expert in self.experts]
        return {n: self.heads[n](mix(self.gates[n].weights(inputs), outputs)) for n in self.task_names}

    def regularization(self) -> Tensor | None:
        """entropy * the summed selector entropies of the static gates (pushes each selector to one expert)."""
        if not self.entropy:
            return None
        return self.entropy * sum(self.gates[n].entropy() for n in self.task_names)

    def parameter_reach(self) -> Reach:
        groups: Reach = [(params(self.experts), frozenset(self.task_names))]
        return groups + [(params(self.gates[n], self.heads[n]), frozenset([n])) for n in self.task_names]

    def attach_task(self, task: Task) -> None:
        """A new gate (same num_experts, k, gamma and kind) over the existing experts and a head for ``task``."""
        gate = next(iter(self.gates.values()))
        width = None if gate.linear is None else gate.linear.in_features
        self.gates[task.name] = DSelectGate(len(self.experts), gate.k, gate.gamma, width)
        self.heads[task.name] = task.build_head(output_width(self.experts[0], "dselect_k"))
        self.task_names.append(task.name)

    def detach_task(self, name: str) -> None:
        """Drop a task's gate and head; the experts and the other gates are untouched."""
        self.drop_task(name, self.gates, self.heads)


def build_dselect_k(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task], num_experts: int = 4, k: int = 2,
                    gamma: float = 1.0, gate: str = "static", entropy: float = 0.0,
                    in_features: int | None = None) -> DSelectK:
    """``num_experts`` (a power of 2) fresh trunks as experts and one DSelect-k gate per task; ``gate`` is
    ``static`` (no input dependence) or ``input`` (reads the flattened input, width ``in_features``)."""
    if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 2 \
            or num_experts & (num_experts - 1):
        raise ValueError(f"model.options.num_experts: DSelect-k selects by binary codes and needs a power of 2 "
                         f"(2, 4, 8, ...), got {num_experts!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"model.options.k: the number of selectors per task must be an integer >= 1, got {k!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
        raise ValueError(f"model.options.gamma: the smooth-step width must be a number > 0, got {gamma!r}")
    if gate not in ("static", "input"):
        raise ValueError(f"model.options.gate: 'static' (no input dependence) or 'input', got {gate!r}")
    if isinstance(entropy, bool) or not isinstance(entropy, (int, float)) or entropy < 0:
        raise ValueError(f"model.options.entropy: the entropy penalty weight must be a number >= 0, got {entropy!r}")
    if entropy and gate == "input":
        raise ValueError("model.options.entropy: the entropy penalty applies to static gates; set gate: static "
                         "or entropy: 0")
    experts = [trunk_factory() for _ in range(num_experts)]
    width = None if gate == "static" else input_width(experts[0], in_features, "model.options.in_features (dselect_k)")
    gates = {t.name: DSelectGate(num_experts, k, float(gamma), width) for t in tasks}
    heads = {t.name: t.build_head(output_width(experts[0], "dselect_k")) for t in tasks}
    return DSelectK(experts, gates, heads, float(entropy))
