"""Several data sets at once: align their tasks and sample batches across them.

Sources labelled for only some tasks train together (UberNet, Kokkinos 2017): a task a
source lacks gets placeholder targets with mask False, so it never adds to that loss.
Source probabilities: proportional, temperature with a cap, annealed (Stickland & Murray
2019) or given.
"""
from __future__ import annotations

import math
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor

from taskloom.data.batch import Batch
from taskloom.data.dataset import MultiTaskDataset, take

STRATEGIES = ("proportional", "temperature", "annealed", "given")


def align_tasks(datasets: Mapping[str, MultiTaskDataset], task_names: Sequence[str]) -> dict[str, MultiTaskDataset]:
    """Give every source every task in ``task_names``: absent tasks get zero targets and mask False.

    A placeholder takes the shape and dtype of the task's targets in a source that has it;
    tasks a source holds but ``task_names`` omits are dropped.
    """
    names = list(task_names)
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique, got {names}")
    templates: dict[str, tuple[Tensor, Tensor]] = {}
    for name in names:
        for dataset in datasets.values():
            if name in dataset.targets:
                templates[name] = (dataset.targets[name], dataset.masks[name])
                break
        else:
            raise ValueError(f"task {name!r} is in no source; the sources hold {sorted(_union(datasets))}")
    aligned = {}
    for source, dataset in datasets.items():
        n = len(dataset)
        targets, masks, weights = {}, {}, {}
        for name in names:
            if name in dataset.targets:
                targets[name] = dataset.targets[name]
                masks[name] = dataset.masks[name]
                if name in dataset.weights:
                    weights[name] = dataset.weights[name]
            else:
                target, mask = templates[name]  # unlabelled everywhere, in the shapes the task's labels have
                targets[name] = torch.zeros((n,) + tuple(target.shape[1:]), dtype=target.dtype)
                masks[name] = torch.zeros((n,) + tuple(mask.shape[1:]), dtype=torch.bool)
        aligned[source] = MultiTaskDataset(dataset.inputs, targets, masks, weights)
    return aligned


def _union(datasets: Mapping[str, MultiTaskDataset]) -> list[str]:
    names: list[str] = []
    for dataset in datasets.values():
        names += [n for n in dataset.targets if n not in names]
    return names


def source_probabilities(
    sizes: Mapping[str, int],
    strategy: str = "proportional",
    temperature: float = 2.0,
    cap: int | None = None,
    probabilities: Mapping[str, float] | None = None,
    epoch: int = 0,
    epochs: int | None = None,
) -> dict[str, float]:
    """The probability of drawing each source at 0-based ``epoch`` under ``strategy``.

    temperature: p_s ~ min(n_s, cap)^(1/T); annealed: p_s ~ n_s^a, a = 1 - 0.8 (e - 1)/(E - 1)
    for 1-based epoch e of E (Stickland & Murray 2019).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if not sizes:
        raise ValueError("no sources given")
    if strategy == "given":
        if probabilities is None:
            raise ValueError("strategy 'given' needs probabilities={source: p, ...}, one per source")
        missing = sorted(set(sizes) - set(probabilities))
        extra = sorted(set(probabilities) - set(sizes))
        if missing or extra:
            raise ValueError(f"probabilities must name each source once: missing {missing}, unknown {extra}; "
                             f"the sources are {sorted(sizes)}")
        bad = {s: p for s, p in probabilities.items() if not (math.isfinite(p) and p >= 0)}
        if bad:
            raise ValueError(f"probabilities must be finite and non-negative; got {bad}")
        raw = {s: float(probabilities[s]) for s in sizes}
    elif strategy == "proportional":
        raw = {s: float(n) for s, n in sizes.items()}
    elif strategy == "temperature":
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if cap is not None and cap < 1:
            raise ValueError(f"cap must be at least 1, got {cap}")
        raw = {s: float(min(n, cap) if cap is not None else n) ** (1.0 / temperature) for s, n in sizes.items()}
    else:
        if epochs is None or epochs < 1:
            raise ValueError("strategy 'annealed' needs epochs=E (the total number of epochs, at least 1)")
        e = min(epoch + 1, epochs)
        alpha = 1.0 - 0.8 * (e - 1) / (epochs - 1) if epochs > 1 else 1.0
        raw = {s: float(n) ** alpha for s, n in sizes.items()}
    total = sum(raw.values())
    if not total > 0:
        raise ValueError(f"source probabilities sum to {total}; at least one must be positive (sizes: {dict(sizes)})")
    return {s: v / total for s, v in raw.items()}


def _concat(parts: Sequence[object]) -> object:
    first = parts[0]
    if isinstance(first, dict):
        return {k: torch.cat([p[k] for p in parts]) for k in first}
    return torch.cat(list(parts))


class MixedLoader:
    """Batches drawn from several sources with per-source probabilities, as a :class:`BatchLoader` does.

    ``homogeneous``: each batch comes from one source; otherwise each batch takes multinomial
    row counts from the sources. One epoch has ceil(sum of rows / batch_size) batches; each
    source cycles through its own seeded permutation. Deterministic per (seed, epoch).
    """

    def __init__(
        self,
        sources: Mapping[str, MultiTaskDataset],
        batch_size: int,
        strategy: str = "proportional",
        temperature: float = 2.0,
        cap: int | None = None,
        probabilities: Mapping[str, float] | None = None,
        homogeneous: bool = True,
        seed: int = 0,
        epochs: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        empty = [s for s, d in sources.items() if len(d) == 0]
        if not sources or empty:
            raise ValueError(f"every source needs rows; empty sources: {empty}" if sources else "no sources given")
        self.sources = align_tasks(sources, _union(sources))
        self.batch_size = batch_size
        self.strategy = strategy
        self.temperature = temperature
        self.cap = cap
        self.given = dict(probabilities) if probabilities is not None else None
        self.homogeneous = homogeneous
        self.seed = seed
        self.epochs = epochs
        self.epoch = 0
        self.sizes = {s: len(d) for s, d in self.sources.items()}
        if not homogeneous:
            self._check_shapes()
        self.probabilities(0)

    def _check_shapes(self) -> None:
        shapes = {s: _shape(d.inputs) for s, d in self.sources.items()}
        if len({repr(v) for v in shapes.values()}) > 1:
            raise ValueError(f"mixed batches (homogeneous=False) need sources with the same input shape; got {shapes}. "
                             "Use homogeneous=True to keep each batch within one source")

    def probabilities(self, epoch: int | None = None) -> dict[str, float]:
        """The source probabilities at ``epoch`` (default: the current one)."""
        return source_probabilities(self.sizes, self.strategy, self.temperature, self.cap, self.given,
                                    self.epoch if epoch is None else epoch, self.epochs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(sum(self.sizes.values()) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        names = list(self.sources)
        p = torch.tensor([self.probabilities()[s] for s in names], dtype=torch.float64)
        cursors = {s: _Cursor(self.sizes[s], generator) for s in names}
        for _ in range(len(self)):
            if self.homogeneous:
                pick = int(torch.multinomial(p, 1, generator=generator))
                counts = [self.batch_size if i == pick else 0 for i in range(len(names))]
            else:
                drawn = torch.multinomial(p, self.batch_size, replacement=True, generator=generator)
                counts = torch.bincount(drawn, minlength=len(names)).tolist()
            parts = [(s, cursors[s].next(c)) for s, c in zip(names, counts) if c > 0]
            yield self._batch(parts)

    def _batch(self, parts: list[tuple[str, Tensor]]) -> Batch:
        datasets = [(self.sources[s], index) for s, index in parts]
        if len(datasets) == 1:
            dataset, index = datasets[0]
            inputs = take(dataset.inputs, index)
        else:
            inputs = _concat([take(d.inputs, i) for d, i in datasets])
        targets, masks, weights = {}, {}, {}
        for name in next(iter(self.sources.values())).targets:
            targets[name] = torch.cat([d.targets[name][i] for d, i in datasets])
            mask = torch.cat([d.masks[name][i] for d, i in datasets])
            if not bool(mask.all()):
                masks[name] = mask
            if any(name in d.weights for d, _ in datasets):
                weights[name] = torch.cat([
                    d.weights[name][i] if name in d.weights else torch.ones(len(i)) for d, i in datasets
                ])
        return Batch(inputs, targets, masks, weights)


def _shape(inputs: object) -> object:
    if isinstance(inputs, dict):
        return {k: tuple(v.shape[1:]) for k, v in inputs.items()}
    return tuple(inputs.shape[1:])  # type: ignore[attr-defined]


class _Cursor:
    """Walks a seeded permutation of one source's rows, reshuffling when it runs out."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n = n
        self.generator = generator
        self.order = torch.randperm(n, generator=generator)
        self.position = 0

    def next(self, count: int) -> Tensor:
        pieces = []
        while count > 0:
            if self.position == self.n:
                self.order = torch.randperm(self.n, generator=self.generator)
                self.position = 0
            step = min(count, self.n - self.position)
            pieces.append(self.order[self.position : self.position + step])
            self.position += step
            count -= step
        return torch.cat(pieces)


__all__ = ["MixedLoader", "align_tasks", "source_probabilities"]
