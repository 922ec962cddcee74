"""Train/validation/test splits by a hash of a row key: stable without loading the table.

Each row's key (a column value, or the row's position in the table) and the split seed are
hashed to a number ``u`` in [0, 1); ``u < test_fraction`` is a test row, ``u < test_fraction +
val_fraction`` a validation row, any other a training row. The answer for a row depends on its
key and the seed only: not on batch sizes, on how the table is cut into files, or on the number
of processes reading it. The split is not stratified, and each split's size is its fraction of
the rows up to binomial noise (a standard deviation of sqrt(n f (1 - f)) rows).

Whole-number keys are mixed with SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable
pseudorandom number generators"); any other key is hashed as its text with BLAKE2b.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = {"train": TRAIN, "val": VAL, "test": TEST}
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's output function applied to each uint64 (arithmetic modulo 2**64)."""
    z = np.asarray(values, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _seed_word(seed: int) -> np.uint64:
    return splitmix64(np.array([seed % 2**64], dtype=np.uint64))[0]


def unit_hashes(words: np.ndarray, seed: int) -> np.ndarray:
    """Each uint64 ``word`` with ``seed`` hashed to a float64 in [0, 1) (53 random bits)."""
    with np.errstate(over="ignore"):
        mixed = splitmix64(np.asarray(words, dtype=np.uint64) ^ _seed_word(seed))
    return (mixed >> np.uint64(11)).astype(np.float64) / float(2**53)


def position_hashes(positions: np.ndarray, seed: int) -> np.ndarray:
    """The [0, 1) hash of each row position (0 = the first data row of the table)."""
    return unit_hashes(np.asarray(positions, dtype=np.int64).astype(np.uint64), seed)


def key_hashes(keys: pd.Series, seed: int, where: str = "the split key") -> np.ndarray:
    """The [0, 1) hash of each key: whole numbers by value, any other key by its text; empty keys are refused."""
    missing = keys.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise ValueError(f"{where}: row {row} has no key; every row needs a key value to be split "
                         "(fill it, or leave data.split.key unset to split by row position)")
    if pd.api.types.is_integer_dtype(keys) and not pd.api.types.is_bool_dtype(keys):
        return unit_hashes(keys.to_numpy().astype(np.int64).astype(np.uint64), seed)
    words = np.fromiter((int.from_bytes(hashlib.blake2b(str(k).encode("utf-8"), digest_size=8).digest(), "little")
                         for k in keys.tolist()), dtype=np.uint64, count=len(keys))
    return unit_hashes(words, seed)


def assign_splits(hashes: np.ndarray, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Split codes (``TRAIN``, ``VAL``, ``TEST``) of rows with [0, 1) ``hashes``."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"data.{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1:
        raise ValueError("data.val_fraction + data.test_fraction must be below 1")
    codes = np.full(len(hashes), TRAIN, dtype=np.int8)
    codes[hashes < test_fraction + val_fraction] = VAL
    codes[hashes < test_fraction] = TEST
    return codes


def hash_split_rows(keys: pd.Series | None, rows: int, val_fraction: float, test_fraction: float,
                    seed: int, where: str = "the split key") -> dict[str, np.ndarray]:
    """Row indices of each split of a whole table (``keys`` None: split by row position), in table order."""
    hashes = position_hashes(np.arange(rows), seed) if keys is None else key_hashes(keys, seed, where)
    codes = assign_splits(hashes, val_fraction, test_fraction)
    return {name: np.flatnonzero(codes == code) for name, code in SPLIT_NAMES.items()}


__all__ = ["SPLIT_NAMES", "TEST", "TRAIN", "VAL", "assign_splits", "hash_split_rows", "key_hashes",
           "position_hashes", "splitmix64", "unit_hashes"]
