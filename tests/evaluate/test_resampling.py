"""Bootstrap replicates of test metrics: with unit weights they are the kinds' own metrics, and a replicate
equals the metric computed on the explicitly resampled rows (the bootstrap's definition)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import taskloom.tagging  # noqa: F401  (registers the tagging kind)
from taskloom.evaluate.resampling import TaskOutputs, point_metric, replicate_metric, row_counts
from taskloom.task import Task

RNG = np.random.default_rng(3)


def _binary(n=60):
    logit = np.round(RNG.normal(size=(n, 1)), 1)  # rounded: many ties
    target = (RNG.random(n) < 0.4).astype(np.float32)
    return Task("b", "binary"), TaskOutputs(logit, target, np.arange(n))


def _multiclass(n=60):
    return Task("m", "multiclass", num_outputs=4), TaskOutputs(RNG.normal(size=(n, 4)), RNG.integers(0, 4, n),
                                                               np.arange(n))


def _multilabel(n=60):
    return Task("l", "multilabel", num_outputs=3), TaskOutputs(RNG.normal(size=(n, 3)),
                                                               (RNG.random((n, 3)) < 0.5).astype(np.float32),
                                                               np.arange(n))


def _regression(n=60):
    target = RNG.normal(size=n)
    return Task("r", "regression"), TaskOutputs((target + RNG.normal(size=n) * 0.5)[:, None], target, np.arange(n))


def _tagging(sentences=20):
    lengths = RNG.integers(1, 5, sentences)
    rows = np.repeat(np.arange(sentences), lengths)
    return Task("t", "tagging", num_outputs=5), TaskOutputs(RNG.normal(size=(len(rows), 5)),
                                                            RNG.integers(0, 5, len(rows)), rows)


CASES = [(_binary, ("accuracy", "macro_f1", "auroc")), (_multiclass, ("accuracy", "macro_f1")),
         (_multilabel, ("accuracy", "macro_f1", "auroc")), (_regression, ("mse", "mae", "r2")),
         (_tagging, ("accuracy", "macro_f1"))]


@pytest.mark.parametrize("make, metrics", CASES)
def test_unit_weights_give_the_kinds_own_metrics(make, metrics):
    task, data = make()
    expected = task.kind_spec.metrics(torch.from_numpy(data.output).float(), torch.from_numpy(data.target), task)
    for metric in metrics:
        assert point_metric(task, metric, data) == pytest.approx(expected[metric], abs=1e-6), metric


@pytest.mark.parametrize("make, metrics", CASES)
def test_a_replicate_is_the_metric_on_the_resampled_rows(make, metrics):
    task, data = make()
    rows = int(data.row.max()) + 1
    counts = row_counts(rows, replicates=5, split=1)
    for metric in metrics:
        values = replicate_metric(task, metric, data, counts)
        for b in range(5):
            picked = np.repeat(np.arange(rows), counts[b].astype(int))  # the resampled rows, repeats included
            units = np.concatenate([np.flatnonzero(data.row == r) for r in picked])
            output = torch.from_numpy(data.output[units]).float()
            expected = task.kind_spec.metrics(output, torch.from_numpy(data.target[units]), task)[metric]
            assert values[b] == pytest.approx(expected, abs=1e-6), (metric, b)


def test_row_counts_are_a_fixed_bootstrap_of_every_row():
    counts = row_counts(50, replicates=200, split=0)
    assert counts.shape == (200, 50) and (counts.sum(1) == 50).all()
    assert np.array_equal(counts, row_counts(50, replicates=200, split=0))
    assert not np.array_equal(counts, row_counts(50, replicates=200, split=1))
    # the variance of 10,000 counts has a standard error of about 0.016 (measured over 200 splits): 3 of them
    assert counts.mean() == pytest.approx(1.0) and counts.var() == pytest.approx(1 - 1 / 50, abs=0.05)


def test_an_auroc_replicate_without_a_class_is_undefined():
    task = Task("b", "binary")
    data = TaskOutputs(np.array([[0.1], [0.9]]), np.array([0.0, 1.0]), np.arange(2))
    values = replicate_metric(task, "auroc", data, np.array([[2.0, 0.0], [1.0, 1.0]]))
    assert np.isnan(values[0]) and values[1] == 1.0


def test_a_large_split_redraws_the_same_counts_in_small_blocks(monkeypatch):
    """Above HELD_COUNTS the counts are drawn again at each use, in blocks bounded by BLOCK_WEIGHTS: same replicates."""
    from taskloom.evaluate import resampling

    held = resampling.BootstrapCounts(40, replicates=600, split=2)
    monkeypatch.setattr(resampling, "HELD_COUNTS", 100)
    monkeypatch.setattr(resampling, "BLOCK_WEIGHTS", 300)  # blocks of 7 replicates of 40 rows
    redrawn = resampling.BootstrapCounts(40, replicates=600, split=2)
    assert held._held is not None and redrawn._held is None
    assert np.array_equal(held.matrix(), redrawn.matrix())
    assert np.array_equal(redrawn.block(250, 257), held.matrix()[250:257])
    task, data = Task("r", "regression"), TaskOutputs(np.linspace(0, 1, 40)[:, None], np.zeros(40), np.arange(40))
    assert np.array_equal(replicate_metric(task, "mse", data, held), replicate_metric(task, "mse", data, redrawn))
