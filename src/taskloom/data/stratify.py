"""Stratified train/validation/test splits for several tasks at once.

Each task contributes one *stratum* per row: its class (binary, multiclass), each of its labels
(multilabel), or its quantile bin (regression); a missing label is a stratum value of its own.
Rows are then dealt out by iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011,
"On the stratification of multi-label data"), with every (task, stratum) pair as one label.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from taskloom.data.dataset import split_indices
from taskloom.task import Task

MAX_QUANTILE_BINS = 10
ROWS_PER_BIN = 20


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Rows of train, validation and test: test and validation rounded from their fractions, train the rest."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"split.{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1:
        raise ValueError("split.val_fraction + split.test_fraction must be below 1")
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    return n - n_val - n_test, n_val, n_test


def quantile_bins(values: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Stratum codes of a regression target: its quantile bin among labelled rows, -1 where unlabelled.

    Up to ``MAX_QUANTILE_BINS`` bins (deciles), fewer so that each holds about ``ROWS_PER_BIN`` labelled rows.
    """
    codes = np.full(len(values), -1, dtype=np.int64)
    present = values[labelled]
    bins = max(1, min(MAX_QUANTILE_BINS, len(present) // ROWS_PER_BIN))
    if bins == 1 or len(present) == 0:
        codes[labelled] = 0
        return codes
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    codes[labelled] = np.searchsorted(edges, present, side="right")
    return codes


def task_strata(tasks: Sequence[Task], targets: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> np.ndarray:
    """A rows x columns matrix of stratum codes (-1: missing label), one column per task or multilabel label.

    Tasks of other kinds (token tagging) have no per-row label and give no column.
    """
    columns: list[np.ndarray] = []
    for task in tasks:
        target = targets[task.name]
        mask = masks[task.name].cpu().numpy().astype(bool)
        if task.kind == "regression" and target.dim() == 1:
            columns.append(quantile_bins(target.double().cpu().numpy(), mask))
        elif task.kind in ("binary", "multiclass") and target.dim() == 1:
            columns.append(np.where(mask, target.long().cpu().numpy(), -1))
        elif task.kind == "multilabel" and target.dim() == 2:
            labels = target.long().cpu().numpy()
            columns.extend(np.where(mask, labels[:, j], -1) for j in range(labels.shape[1]))
    if not columns:
        return np.zeros((len(next(iter(targets.values()))) if targets else 0, 0), dtype=np.int64)
    return np.stack(columns, axis=1)


def iterative_stratification(strata: np.ndarray, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Rows dealt into subsets of exactly ``sizes`` rows, keeping each (column, code) pair's share per subset.

    Sechidis et al. 2011, Algorithm 1: repeatedly take the label (here a (column, code) pair) with the
    fewest rows still to place, and give each of its rows to the subset that most lacks that label
    (ties: the subset that most lacks rows, then at random). One change: a subset that is full takes
    no more rows, so the sizes are exactly those of a random split. Ties and row order follow ``seed``.
    """
    n, k = strata.shape
    if sum(sizes) != n:
        raise ValueError(f"subset sizes {list(sizes)} do not add up to {n} rows")
    if k == 0:
        raise ValueError("iterative stratification needs at least one stratum column")
    if n == 0:
        return [np.zeros(0, dtype=np.int64) for _ in sizes]
    rng = np.random.default_rng(seed)
    labels = np.empty((n, k), dtype=np.int64)
    offset = 0
    for j in range(k):
        _, inverse = np.unique(strata[:, j], return_inverse=True)
        labels[:, j] = offset + inverse.reshape(-1)
        offset += int(inverse.max()) + 1
    order = rng.permutation(n)
    shuffled = labels[order]
    members = [order[(shuffled == label).any(axis=1)] for label in range(offset)]
    remaining = np.array([len(m) for m in members], dtype=np.int64)
    fractions = np.asarray(sizes, dtype=float) / max(n, 1)
    wanted = remaining[:, None] * fractions[None, :]
    room = np.asarray(sizes, dtype=np.int64).copy()
    assigned = np.full(n, -1, dtype=np.int64)
    while (remaining > 0).any():
        open_labels = np.flatnonzero(remaining > 0)
        fewest = remaining[open_labels].min()
        label = int(rng.choice(open_labels[remaining[open_labels] == fewest]))
        for row in members[label]:
            if assigned[row] >= 0:
                continue
            subset = _pick(wanted[label], room, rng)
            assigned[row] = subset
            room[subset] -= 1
            wanted[labels[row], subset] -= 1
            remaining[labels[row]] -= 1
    return [np.sort(np.flatnonzero(assigned == s)) for s in range(len(sizes))]


def _pick(wanted: np.ndarray, room: np.ndarray, rng: np.random.Generator) -> int:
    """The open subset with the largest ``wanted``, then the largest ``room``, then a random one."""
    open_subsets = np.flatnonzero(room > 0)
    best = open_subsets[wanted[open_subsets] == wanted[open_subsets].max()]
    if len(best) > 1:
        best = best[room[best] == room[best].max()]
    return int(best[0] if len(best) == 1 else rng.choice(best))


def stratified_split_indices(strata: np.ndarray, val_fraction: float, test_fraction: float,
                             seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Train, validation and test row indices, stratified on ``strata`` (see :func:`iterative_stratification`).

    The sizes are those of :func:`taskloom.data.dataset.split_indices` for the same fractions; with
    no stratum column the split is that random one.
    """
    if strata.ndim != 2 or strata.shape[1] == 0:
        return split_indices(strata.shape[0], val_fraction, test_fraction, seed)
    sizes = split_sizes(strata.shape[0], val_fraction, test_fraction)
    train, val, test = iterative_stratification(strata, sizes, seed)
    return torch.from_numpy(train), torch.from_numpy(val), torch.from_numpy(test)


def split_for_tasks(tasks: Sequence[Task], targets: Mapping[str, Tensor], masks: Mapping[str, Tensor],
                    val_fraction: float, test_fraction: float, seed: int,
                    stratify: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """The split a loader uses: stratified on every task's labels (:func:`task_strata`), or random."""
    if not stratify:
        return split_indices(len(next(iter(targets.values()))), val_fraction, test_fraction, seed)
    return stratified_split_indices(task_strata(tasks, targets, masks), val_fraction, test_fraction, seed)


__all__ = [
    "iterative_stratification", "quantile_bins", "split_for_tasks", "split_sizes", "stratified_split_indices",
    "task_strata",
]
