"""Per-epoch matrices read back from metrics.jsonl: a repeated epoch counts once; a variant's seeds are pooled."""
from __future__ import annotations

import json

import pytest

from taskloom.evaluate.logged import dedupe_epochs, mean_logged_matrix, read_records, variant_records


def _write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_resumed_epoch_logged_twice_counts_once_with_its_last_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, [{"model": "m", "epoch": 1, "affinity": {"a": {"b": 1.0}}},
                  {"model": "m", "epoch": 2, "affinity": {"a": {"b": 5.0}}},
                  {"model": "m", "epoch": 2, "affinity": {"a": {"b": 3.0}}}])
    records = read_records(path)
    assert [(r["epoch"], r["affinity"]["a"]["b"]) for r in records] == [(1, 1.0), (2, 3.0)]
    matrix, epochs = mean_logged_matrix(records, "affinity")
    assert epochs == 2 and matrix["a"]["b"] == pytest.approx(2.0)  # (1 + 3) / 2, not (1 + 5 + 3) / 3


def test_dedupe_keeps_distinct_models_and_records_without_an_epoch():
    records = [{"model": "a", "epoch": 1, "x": 1}, {"model": "b", "epoch": 1, "x": 2}, {"note": "no epoch"},
               {"note": "no epoch"}, {"model": "a", "epoch": 1, "x": 3}]
    assert dedupe_epochs(records) == [{"model": "a", "epoch": 1, "x": 3}, {"model": "b", "epoch": 1, "x": 2},
                                      {"note": "no epoch"}, {"note": "no epoch"}]


def test_variant_records_pool_every_seed_that_exists(tmp_path):
    for seed, value in ((0, 1.0), (2, 4.0)):
        _write(tmp_path / "hard+equal" / f"seed{seed}" / "metrics.jsonl",
               [{"model": "hard+equal", "epoch": 1, "conflict": {"a": {"b": value}}}])
    records = variant_records(tmp_path, "hard+equal", [0, 1, 2])
    matrix, epochs = mean_logged_matrix(records, "conflict")
    assert epochs == 2 and matrix["a"]["b"] == pytest.approx((1.0 + 4.0) / 2)
