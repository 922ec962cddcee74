"""Bootstrap replicates of a task's test metric: the test rows resampled with replacement.

A replicate is a vector of row counts (a multinomial draw of n rows out of n), so every
metric is computed as a weighted metric over the original rows: the same replicate can be
applied to every model of a split (the *paired* bootstrap, Efron & Tibshirani 1993, ch. 6)
and the counts are drawn once per split from a fixed seed. Units that are not rows (tokens
of a tagged sentence) take their row's count, so whole sentences are resampled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from taskloom.task import Task

REPLICATES = 1000
BOOTSTRAP_SEED = 20260912
BLOCK = 250  # replicates per block: bounds the memory of one (block x units) weight matrix


#: a split's counts are held (as uint16) up to this many (replicate, row) entries, 64 MB; above, replicates are
#: drawn again where they are used, so a test split of millions of rows never holds replicates x rows counts
HELD_COUNTS = 1 << 25
#: the most (replicate, unit) weights one block of :func:`replicate_metric` holds (64 MB of float64)
BLOCK_WEIGHTS = 1 << 23


class BootstrapCounts:
    """The fixed ``replicates x rows`` bootstrap counts of a split's test rows.

    Replicate r is drawn from a generator seeded by (split, rows, r), so every model of a split
    sees the same replicates (the paired bootstrap) whether the counts are held or drawn again.
    Small splits hold them; larger ones (over ``HELD_COUNTS`` entries) redraw the replicates a
    block needs at each use, trading time for memory.
    """

    def __init__(self, rows: int, replicates: int = REPLICATES, split: int = 0) -> None:
        self.rows, self.replicates, self.split = rows, replicates, split
        self._held = self._draw(0, replicates).astype(np.uint16) if rows * replicates <= HELD_COUNTS else None

    def __len__(self) -> int:
        return self.replicates

    def _draw(self, start: int, stop: int) -> np.ndarray:
        uniform = np.full(self.rows, 1.0 / self.rows)
        return np.stack([np.random.default_rng([BOOTSTRAP_SEED, self.split, self.rows, r]).multinomial(
            self.rows, uniform) for r in range(start, stop)])

    def block(self, start: int, stop: int) -> np.ndarray:
        """The counts of replicates ``start`` to ``stop`` (float64, one row per replicate)."""
        counts = self._held[start:stop] if self._held is not None else self._draw(start, min(stop, self.replicates))
        return counts.astype(np.float64)

    def matrix(self) -> np.ndarray:
        """All ``replicates x rows`` counts at once (float64)."""
        return self.block(0, self.replicates)


def row_counts(rows: int, replicates: int = REPLICATES, split: int = 0) -> np.ndarray:
    """``replicates x rows`` counts of a bootstrap of ``rows`` test rows, fixed by the split index."""
    return BootstrapCounts(rows, replicates, split).matrix()


@dataclass
class TaskOutputs:
    """A model's outputs on one task's labelled test units, their targets and the test row of each unit."""

    output: np.ndarray
    target: np.ndarray
    row: np.ndarray


def _weighted_auroc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney area per weight row; ties count one half. NaN where a class has no weight."""
    order = np.argsort(score, kind="mergesort")
    sorted_score = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    is_positive = positive[order].astype(np.float64)
    w = weights[:, order]
    positives = np.add.reduceat(w * is_positive, starts, axis=1)
    negatives = np.add.reduceat(w * (1.0 - is_positive), starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(1) * negatives.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        area = (positives * (below + 0.5 * negatives)).sum(1) / pairs
    return np.where(pairs > 0, area, np.nan)


def _weighted_macro_f1(predicted: np.ndarray, target: np.ndarray, classes: int, weights: np.ndarray) -> np.ndarray:
    """Mean per-class F1 over the classes present (in target or prediction) in each weighted replicate."""
    total = np.zeros(len(weights))
    present = np.zeros(len(weights))
    for c in range(classes):
        p, t = predicted == c, target == c
        if not (p.any() or t.any()):
            continue
        tp, fp, fn = weights @ (p & t), weights @ (p & ~t), weights @ (~p & t)
        denominator = 2 * tp + fp + fn
        counted = denominator > 0
        total += np.where(counted, 2 * tp / np.where(counted, denominator, 1), 0.0)
        present += counted
    return np.where(present > 0, total / np.maximum(present, 1), 0.0)


def _mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (weights @ values) / weights.sum(1)


def weighted_metric(task: Task, metric: str, data: TaskOutputs) -> Callable[[np.ndarray], np.ndarray]:
    """A function of unit weights (replicates x units) giving ``metric`` of ``task`` per replicate.

    With all weights 1 it equals the task kind's own metric on the same outputs (tested).
    """
    kind, output, target = task.kind, data.output.astype(np.float64), data.target
    if kind in ("multiclass", "tagging"):
        scores = output.reshape(-1, output.shape[-1])
        predicted, labels = scores.argmax(-1), target.reshape(-1).astype(np.int64)
        if metric == "accuracy":
            return lambda w: _mean((predicted == labels).astype(np.float64), w)
        if metric == "macro_f1":
            return lambda w: _weighted_macro_f1(predicted, labels, task.num_outputs, w)
    elif kind == "binary":
        logit, labels = output.reshape(-1), target.reshape(-1).astype(np.int64)
        predicted = (logit > 0).astype(np.int64)
        if metric == "accuracy":
            return lambda w: _mean((predicted == labels).astype(np.float64), w)
        if metric == "macro_f1":
            return lambda w: _weighted_macro_f1(predicted, labels, 2, w)
        if metric == "auroc":
            return lambda w: _weighted_auroc(logit, labels == 1, w)
    elif kind == "multilabel":
        labels = target.astype(np.int64)
        predicted = (output > 0).astype(np.int64)
        columns = range(labels.shape[1])
        if metric == "accuracy":
            return lambda w: _mean((predicted == labels).mean(1), w)
        if metric == "macro_f1":
            return lambda w: np.mean([_weighted_macro_f1(predicted[:, j], labels[:, j], 2, w) for j in columns], 0)
        if metric == "auroc":
            return lambda w: np.nanmean(np.stack([_weighted_auroc(output[:, j], labels[:, j] == 1, w)
                                                  for j in columns]), 0)
    elif kind == "regression":
        predicted = output.squeeze(-1) if output.shape[-1] == 1 else output
        truth = target.astype(np.float64).reshape(predicted.shape)
        error = (predicted - truth).reshape(len(truth), -1)
        truth = truth.reshape(len(truth), -1)
        if metric == "mse":
            return lambda w: _mean((error ** 2).mean(1), w)
        if metric == "mae":
            return lambda w: _mean(np.abs(error).mean(1), w)
        if metric == "r2":
            def r2(w: np.ndarray) -> np.ndarray:
                total = w.sum(1, keepdims=True)
                residual = w @ (error ** 2)
                spread = w @ (truth ** 2) - (w @ truth) ** 2 / total
                with np.errstate(invalid="ignore", divide="ignore"):
                    score = 1 - residual / spread
                return np.where((spread > 1e-12 * np.maximum(1.0, w @ truth ** 2)).all(1), score.mean(1), np.nan)
            return r2
    raise ValueError(f"task {task.name!r}: no bootstrap for metric {metric!r} of a {kind} task; "
                     "choose another main_metric")


def replicate_metric(task: Task, metric: str, data: TaskOutputs, counts: np.ndarray | BootstrapCounts) -> np.ndarray:
    """``metric`` on each bootstrap replicate (row ``counts``: replicates x test rows); NaN where undefined."""
    compute = weighted_metric(task, metric, data)
    out = np.empty(len(counts))
    step = max(1, min(BLOCK, BLOCK_WEIGHTS // max(1, len(data.row))))
    for start in range(0, len(counts), step):
        stop = start + step
        block = counts.block(start, stop) if isinstance(counts, BootstrapCounts) else counts[start:stop]
        out[start:stop] = compute(block[:, data.row])
    return out


def point_metric(task: Task, metric: str, data: TaskOutputs) -> float:
    """``metric`` on the test units as they are (every weight 1)."""
    value = weighted_metric(task, metric, data)(np.ones((1, len(data.row))))[0]
    return float(value)
