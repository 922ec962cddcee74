"""Stratified splits: rare positives reach every split, several tasks keep their shares, regression by bins."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from taskloom.data.dataset import split_indices
from taskloom.data.datasets.synthetic import load_synthetic
from taskloom.data.datasets.table import load_table
from taskloom.data.stratify import iterative_stratification, quantile_bins, split_sizes, stratified_split_indices
from taskloom.task import Task

FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def _labels(splits, task: str) -> dict[str, np.ndarray]:
    """Each split's labels of ``task``, NaN where unlabelled."""
    out = {}
    for name in FRACTIONS:
        split = getattr(splits, name)
        values = split.targets[task].double().numpy()
        out[name] = np.where(split.masks[task].numpy(), values, np.nan)
    return out


def test_split_sizes_round_validation_and_test_and_give_train_the_rest():
    assert split_sizes(2000, 0.1, 0.2) == (1400, 200, 400)
    assert split_sizes(7, 0.1, 0.2) == (5, 1, 1)  # round(0.7) = 1, round(1.4) = 1


def test_rare_positives_reach_every_split_in_proportion():
    n, positives = 2000, 12
    frame = pd.DataFrame({"x": np.random.default_rng(0).normal(size=n), "rare": np.zeros(n, dtype=int)})
    frame.loc[np.random.default_rng(1).choice(n, positives, replace=False), "rare"] = 1
    splits = load_table([Task("rare", "binary")], frame=frame, val_fraction=0.1, test_fraction=0.2, seed=0)
    counts = {name: int(np.nansum(values)) for name, values in _labels(splits, "rare").items()}
    # expected 12 * (0.7, 0.1, 0.2) = (8.4, 1.2, 2.4): each split within one row of it
    for name, fraction in FRACTIONS.items():
        assert abs(counts[name] - positives * fraction) < 1, counts
    assert sum(counts.values()) == positives and min(counts.values()) >= 1


def test_random_split_often_misses_the_rare_positives_that_stratification_keeps():
    """Why it matters: 12 positives in 2,000 rows, a random 10 % validation split gets none with probability
    C(1988, 200) / C(2000, 200) ~ 0.28, so some of 20 seeds must miss while stratified splits never do."""
    n = 2000
    labels = np.zeros(n, dtype=np.int64)
    labels[np.random.default_rng(1).choice(n, 12, replace=False)] = 1
    random_misses = sum(int(labels[split_indices(n, 0.1, 0.2, seed)[1].numpy()].sum()) == 0 for seed in range(20))
    stratified_misses = sum(int(labels[stratified_split_indices(labels[:, None], 0.1, 0.2, seed)[1].numpy()].sum()) == 0
                            for seed in range(20))
    assert random_misses > 0 and stratified_misses == 0


def test_several_tasks_keep_their_class_shares_in_every_split():
    """Tolerance: for the first label it places, the greedy rule (give the row to the subset lacking the label most)
    ends with every subset within one row of its share (the deficits sum to zero and each step lowers the largest,
    so they end in (-1, 1]); rows already placed for other tasks may shift a label by another row, so 2 rows.
    A random split's standard deviation, sqrt(n_c f (1 - f)), is 2 to 22 rows for these classes."""
    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({"x": rng.normal(size=n)})
    rates = {"a": 0.02, "b": 0.1, "c": 0.4}
    for name, rate in rates.items():
        column = (rng.random(n) < rate).astype(float)
        column[rng.random(n) < 0.1] = np.nan  # a missing label is a stratum of its own
        frame[name] = column
    frame["kind"] = rng.choice(["p", "q", "r", "s"], n, p=[0.55, 0.3, 0.1, 0.05])
    tasks = [Task(name, "binary") for name in rates] + [Task("kind", "multiclass", 4)]
    splits = load_table(tasks, frame=frame, val_fraction=0.1, test_fraction=0.2, seed=3)
    checked = 0
    for task in tasks:
        labels = _labels(splits, task.name)
        everything = np.concatenate(list(labels.values()))
        for value in [np.nan, *np.unique(everything[~np.isnan(everything)])]:
            total = int(np.sum(np.isnan(everything) if np.isnan(value) else everything == value))
            if total == 0:  # kind has no missing label
                continue
            for name, fraction in FRACTIONS.items():
                part = labels[name]
                count = int(np.sum(np.isnan(part) if np.isnan(value) else part == value))
                assert abs(count - total * fraction) <= 2, (task.name, value, name, count, total * fraction)
                checked += 1
    assert checked == (3 * 3 + 4) * 3


def test_quantile_bins_are_deciles_with_missing_as_its_own_code():
    values = np.arange(202, dtype=float)
    labelled = np.ones(202, dtype=bool)
    labelled[[0, 201]] = False
    codes = quantile_bins(values, labelled)
    assert codes[0] == -1 and codes[201] == -1
    assert np.bincount(codes[labelled]).tolist() == [20] * 10  # 200 labelled rows: ten deciles of 20
    assert np.all(np.diff(codes[labelled]) >= 0)  # bins follow the order of the values
    assert len(np.unique(quantile_bins(values[:45], np.ones(45, dtype=bool)))) == 2  # 45 rows: bins of ~20 rows


def test_regression_splits_cover_the_range_of_the_target():
    splits = load_synthetic(n=1000, d=4, num_tasks=1, val_fraction=0.1, test_fraction=0.2, seed=0)
    labels = _labels(splits, "y1")
    everything = np.concatenate(list(labels.values()))
    edges = np.quantile(everything, np.linspace(0, 1, 11)[1:-1])
    for name, fraction in FRACTIONS.items():
        per_decile = np.bincount(np.searchsorted(edges, labels[name], side="right"), minlength=10)
        assert np.all(np.abs(per_decile - 100 * fraction) <= 1), (name, per_decile)


def test_stratify_false_is_the_random_split():
    frame = pd.DataFrame({"x": np.arange(100, dtype=float) % 7, "y": np.arange(100) % 2})
    splits = load_table([Task("y", "binary")], frame=frame, seed=5, stratify=False)
    random = split_indices(100, 0.1, 0.2, 5)
    for name, rows in zip(FRACTIONS, random):
        assert np.array_equal(splits.info["rows"][name], rows.numpy())
    assert splits.info["stratified"] is False


def test_same_seed_same_split_and_another_seed_another():
    rng = np.random.default_rng(0)
    strata = np.stack([rng.integers(0, 3, 500), rng.integers(-1, 2, 500)], axis=1)
    first = iterative_stratification(strata, split_sizes(500, 0.1, 0.2), seed=7)
    again = iterative_stratification(strata, split_sizes(500, 0.1, 0.2), seed=7)
    other = iterative_stratification(strata, split_sizes(500, 0.1, 0.2), seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[2], other[2])
    assert sorted(np.concatenate(first).tolist()) == list(range(500))  # a partition of the rows
    assert [len(part) for part in first] == list(split_sizes(500, 0.1, 0.2))


def test_multilabel_columns_are_stratified_each():
    from taskloom.data.stratify import task_strata

    targets = {"tags": torch.tensor([[1, 0], [0, 1], [1, 1]], dtype=torch.float32)}
    masks = {"tags": torch.tensor([True, True, False])}
    strata = task_strata([Task("tags", "multilabel", 2)], targets, masks)
    assert strata.tolist() == [[1, 0], [0, 1], [-1, -1]]
