"""The hash split: fractions, disjoint and complete parts, and a row's split fixed by its key and the seed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskloom.data.hash_split import assign_splits, hash_split_rows, key_hashes, unit_hashes


def test_hash_split_fractions_are_within_binomial_noise_and_parts_are_disjoint_and_complete():
    n = 20_000
    parts = hash_split_rows(None, n, 0.1, 0.2, seed=7)
    rows = np.concatenate(list(parts.values()))
    assert len(rows) == n and len(np.unique(rows)) == n
    for name, fraction in (("val", 0.1), ("test", 0.2)):
        assert abs(len(parts[name]) - n * fraction) < 4 * np.sqrt(n * fraction * (1 - fraction))


def test_hash_split_depends_on_key_and_seed_only():
    keys = pd.Series(np.arange(1000) * 13)
    whole = hash_split_rows(keys, 1000, 0.1, 0.2, seed=1)
    shuffled = np.random.default_rng(0).permutation(1000)
    moved = hash_split_rows(keys.iloc[shuffled].reset_index(drop=True), 1000, 0.1, 0.2, seed=1)
    for name in whole:  # the same keys land in the same split wherever they sit
        assert set(keys.iloc[shuffled].to_numpy()[moved[name]]) == set(keys.to_numpy()[whole[name]])
    other = hash_split_rows(keys, 1000, 0.1, 0.2, seed=2)
    assert not np.array_equal(other["test"], whole["test"])
    codes = assign_splits(np.array([0.0, 0.19, 0.2, 0.29, 0.31, 0.99]), 0.1, 0.2)
    assert codes.tolist() == [2, 2, 1, 1, 0, 0]  # test below 0.2, validation below 0.3




def test_text_keys_hash_by_text_and_empty_keys_are_refused():
    keys = pd.Series(["a", "b", "a"])
    hashes = key_hashes(keys, seed=3)
    assert hashes[0] == hashes[2] != hashes[1]
    assert ((0 <= hashes) & (hashes < 1)).all()
    with pytest.raises(ValueError, match=r"the split key: row 1 has no key"):
        key_hashes(pd.Series(["a", None]), seed=0)


def test_unit_hashes_are_uniform():
    hashes = unit_hashes(np.arange(100_000, dtype=np.uint64), seed=0)
    counts = np.histogram(hashes, bins=10, range=(0, 1))[0]
    assert np.abs(counts - 10_000).max() < 5 * np.sqrt(10_000)  # binomial noise
