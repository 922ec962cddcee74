"""Interaction between task towers, after Xia & Ding (2019), "Emotion-cause pair extraction: a new task
to emotion analysis in texts", ACL 2019 (Inter-EC and Inter-CE).

In the paper each task has its own two-layer network; the emotion task's predictions are fed into
the upper layer of the cause task (Inter-EC), or the other way round (Inter-CE). ``mode="predictions"``
(the default) is that: task towers in an order, and each tower's upper layer reads its own lower
features concatenated with the predicted label distributions of the tasks before it, embedded as in
the cascade (``embedding_dim=None`` concatenates the distributions themselves, as the paper does).
``mode="features"`` is an extension, not the paper's: at the cut each tower's hidden features ``h``
are fused with the mean ``m`` of the other towers' as ``h + W [m; h * m]``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from taskloom.sharing.cascade import distribution_size, label_distribution
from taskloom.sharing.layers import as_sequential, block_ends, check_depth, check_task_keys, output_width, width_at
from taskloom.sharing.parameters import Reach, ReachSplit, params
from taskloom.task import Task

MODES = ("predictions", "features")


class Fusion(nn.Module):
    """h_k + W_k [m ; h_k * m], where m is the mean of the other tasks' features: a residual exchange."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * width, width)

    def forward(self, own: Tensor, others: Tensor) -> Tensor:
        return own + self.linear(torch.cat([others, own * others], dim=-1))


class FeatureInteraction(ReachSplit):
    """Per-task lower and upper towers with a :class:`Fusion` per task between them (``mode="features"``)."""

    adversarial_input = None

    def __init__(self, lower: Mapping[str, nn.Module], upper: Mapping[str, nn.Module],
                 heads: Mapping[str, nn.Module], width: int) -> None:
        super().__init__()
        self.task_names = list(lower)
        self.lower = nn.ModuleDict(dict(lower))
        self.upper = nn.ModuleDict({n: upper[n] for n in self.task_names})
        self.heads = nn.ModuleDict({n: heads[n] for n in self.task_names})
        self.fusion = nn.ModuleDict({n: Fusion(width) for n in self.task_names} if len(self.task_names) > 1 else {})

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        low = {n: self.lower[n](inputs) for n in self.task_names}
        if len(self.task_names) > 1:
            total = torch.stack(list(low.values())).sum(0)
            k = len(self.task_names)
            low = {n: self.fusion[n](h, (total - h) / (k - 1)) for n, h in low.items()}
        return {n: self.heads[n](self.upper[n](low[n])) for n in self.task_names}

    def parameter_reach(self) -> Reach:
        every = frozenset(self.task_names)
        groups: Reach = [(params(self.lower[n]), every) for n in self.task_names]
        return groups + [
            (params(self.fusion[n] if n in self.fusion else None, self.upper[n], self.heads[n]), frozenset([n]))
            for n in self.task_names
        ]


class PredictionInteraction(ReachSplit):
    """Task towers in ``order``; task k's upper tower reads [its lower features; the label embeddings of
    the predictions of every task before it] (Xia & Ding 2019, Inter-EC / Inter-CE for two tasks).

    The upper tower's first ``nn.Linear`` is widened for the embeddings (the head, when the tower
    is cut at its top); gradients flow through the predictions, so an earlier task's tower also
    learns from the later tasks' losses, as in the paper's joint training.
    """

    adversarial_input = None

    def __init__(self, tasks: Sequence[Task], lower: Mapping[str, nn.Module], upper: Mapping[str, nn.Module],
                 heads: Mapping[str, nn.Module], embedding_dim: int | None = 16) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.task_names = [t.name for t in self.tasks]
        self.lower = nn.ModuleDict({n: lower[n] for n in self.task_names})
        self.upper = nn.ModuleDict({n: upper[n] for n in self.task_names})
        self.heads = nn.ModuleDict({n: heads[n] for n in self.task_names})
        self.embedding_dim = embedding_dim
        self.embeddings = nn.ParameterDict({
            t.name: nn.Parameter(torch.randn(distribution_size(t), embedding_dim) / embedding_dim ** 0.5)
            for t in self.tasks[:-1]
        } if embedding_dim is not None else {})

    def passed_on(self, task: Task, output: Tensor) -> Tensor:
        """What task ``task`` gives the later towers: its predicted distribution, embedded unless ``embedding_dim=None``."""
        distribution = label_distribution(task, output)
        return distribution @ self.embeddings[task.name] if self.embedding_dim is not None else distribution

    def upper_inputs(self, inputs: Any) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Every task's output and what its upper tower read (lower features, then earlier tasks' predictions)."""
        outputs: dict[str, Tensor] = {}
        read: dict[str, Tensor] = {}
        earlier: list[Tensor] = []
        for task in self.tasks:
            read[task.name] = torch.cat([self.lower[task.name](inputs), *earlier], dim=-1)
            outputs[task.name] = self.heads[task.name](self.upper[task.name](read[task.name]))
            if task is not self.tasks[-1]:
                earlier.append(self.passed_on(task, outputs[task.name]))
        return outputs, read

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        return self.upper_inputs(inputs)[0]

    def parameter_reach(self) -> Reach:
        reach: dict[str, frozenset[str]] = {}
        for k in reversed(range(len(self.task_names))):  # a task's output reaches itself and every later task
            reach[self.task_names[k]] = frozenset(self.task_names[k:])
        groups: Reach = []
        for n in self.task_names:
            groups.append((params(self.lower[n], self.upper[n], self.heads[n]), reach[n]))
            if n in self.embeddings:
                groups.append((params(self.embeddings[n]), reach[n] - {n}))
        return groups


def _widened(upper: nn.Sequential, head: nn.Module, extra: int, field: str) -> tuple[nn.Module, nn.Module]:
    """The upper tower (or, when it is empty, the head) with ``extra`` more inputs on its first nn.Linear."""
    target = upper if len(upper) else head
    first = target[0] if isinstance(target, nn.Sequential) else target
    if not isinstance(first, nn.Linear):
        raise ValueError(
            f"{field}: in mode 'predictions' the upper layer reads the earlier tasks' predictions through an "
            f"nn.Linear, but the tower above the cut starts with {type(first).__name__}; cut at a block end "
            "(after an activation), where the next layer is an nn.Linear"
        )
    wider = nn.Linear(first.in_features + extra, first.out_features, bias=first.bias is not None)
    if isinstance(target, nn.Sequential):
        target = nn.Sequential(wider, *list(target)[1:])
    else:
        target = wider
    return (target, head) if len(upper) else (upper, target)


def build_interaction(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task], at: int | None = None,
                      mode: str = "predictions", order: Sequence[str] | None = None,
                      embedding_dim: int | None = 16) -> PredictionInteraction | FeatureInteraction:
    """A fresh trunk per task cut after layer index ``at`` (default: before the last block).

    ``mode="predictions"`` (Xia & Ding 2019): each upper tower reads the label embeddings of the
    predictions of the tasks before it in ``order`` (default: as given). ``mode="features"``:
    the towers' features at the cut are exchanged and fused (an extension; see the module).
    """
    if mode not in MODES:
        raise ValueError(f"interaction.mode: unknown mode {mode!r}; choose one of {MODES}")
    by_name = {t.name: t for t in tasks}
    if mode == "features" and order is not None:
        raise ValueError("interaction.order: only mode 'predictions' passes predictions in an order")
    order = list(order) if order is not None else list(by_name)
    check_task_keys(order, list(by_name), "interaction.order")
    if sorted(order) != sorted(by_name):
        raise ValueError(f"interaction.order: list every task exactly once; got {order} for tasks {list(by_name)}")
    if embedding_dim is not None and (isinstance(embedding_dim, bool) or int(embedding_dim) < 1):
        raise ValueError(f"interaction.embedding_dim: a positive integer, or null for the raw distributions; "
                         f"got {embedding_dim!r}")
    trunks = {n: trunk_factory() for n in order}
    sequences = {n: as_sequential(tr, "interaction") for n, tr in trunks.items()}
    first = next(iter(sequences.values()))
    if at is None:
        ends = block_ends(first)
        if len(ends) < 2:
            raise ValueError("interaction: the trunk has a single block; give the layer index 'at'")
        at = ends[-2]
    at = check_depth(at, first, "interaction.at", allow_full=True)
    width = width_at(first, at, "interaction.at")
    heads = {n: by_name[n].build_head(output_width(trunks[n], "interaction")) for n in order}
    lower = {n: s[:at] for n, s in sequences.items()}
    upper = {n: s[at:] for n, s in sequences.items()}
    if mode == "features":
        return FeatureInteraction(lower, upper, heads, width)
    ordered = [by_name[n] for n in order]
    extra = 0
    for task in ordered:
        if extra:
            upper[task.name], heads[task.name] = _widened(upper[task.name], heads[task.name], extra, "interaction.at")
        extra += distribution_size(task) if embedding_dim is None else int(embedding_dim)
    return PredictionInteraction(ordered, lower, upper, heads, None if embedding_dim is None else int(embedding_dim))
