"""compare.csv and compare.md from a hand-made compare.json, checked against values computed by hand."""
from __future__ import annotations

import csv
import io

import pytest

from taskloom.evaluate.table import TASK_COLUMNS, compare_rows, rows_to_csv, rows_to_markdown, write_compare_tables

COMPARE = {
    "dataset": "hand",
    "tasks": {"acc": {"metric": "accuracy", "higher_is_better": True},
              "err": {"metric": "mse", "higher_is_better": False}},
    "baseline": "single",
    "seeds": [0, 1],
    "variants": {
        "single": {"kind": "single", "values": {"0": {"acc": 0.80, "err": 2.0}, "1": {"acc": 0.80, "err": 2.0}},
                   "parameters": 200, "train_seconds": {"0": 4.0, "1": 6.0}, "inference_seconds": 0.2, "models": 2},
        "hard+equal": {"kind": "multi", "values": {"0": {"acc": 0.84, "err": 1.8}, "1": {"acc": 0.88, "err": 1.6}},
                       "parameters": 120, "train_seconds": {"0": 3.0, "1": 3.0},
                       "analysis_seconds": {"0": 1.0, "1": 2.0}, "inference_seconds": 0.1, "models": 1},
        "groups-2": {"kind": "groups", "groups": [["acc"], ["err"]],
                     "values": {"0": {"acc": 0.80, "err": 2.0}, "1": {"acc": 0.80, "err": 2.0}}, "models": 2},
    },
}


def test_rows_hold_means_changes_and_delta_m_computed_by_hand():
    tasks, variants = compare_rows(COMPARE)
    assert [(r["task"], r["variant"]) for r in tasks] == [(t, v) for t in ("acc", "err")
                                                         for v in ("single", "hard+equal", "groups-2")]
    acc = next(r for r in tasks if r["task"] == "acc" and r["variant"] == "hard+equal")
    assert acc["mean"] == pytest.approx(0.86) and acc["std"] == pytest.approx(0.02 * 2 ** 0.5)
    assert acc["relative_change_pct"] == pytest.approx(100 * (0.86 - 0.80) / 0.80)  # 7.5: higher is better
    err = next(r for r in tasks if r["task"] == "err" and r["variant"] == "hard+equal")
    assert err["relative_change_pct"] == pytest.approx(-100 * (1.7 - 2.0) / 2.0)  # 15: lower is better
    assert next(r for r in tasks if r["variant"] == "single")["verdict"] == "baseline"
    multi = next(r for r in variants if r["variant"] == "hard+equal")
    # per seed: (5 + 10) / 2 = 7.5 and (10 + 20) / 2 = 15; mean 11.25
    assert multi["delta_m_pct"] == pytest.approx(11.25)
    assert multi["train_seconds_mean"] == pytest.approx(3.0) and multi["analysis_seconds_mean"] == pytest.approx(1.5)
    assert next(r for r in variants if r["variant"] == "groups-2")["groups"] == "{acc} | {err}"


def test_csv_and_markdown_files(tmp_path):
    csv_path, md_path = write_compare_tables(COMPARE, tmp_path)
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert list(rows[0]) == list(TASK_COLUMNS) and len(rows) == 6
    row = rows[1]
    assert (row["task"], row["variant"], row["higher_is_better"], row["units"]) == ("acc", "hard+equal", "true", "2")
    assert float(row["relative_change_pct"]) == pytest.approx(7.5)
    assert rows[0]["relative_change_pct"] == "" and rows[0]["verdict"] == "baseline"
    text = md_path.read_text()
    assert text.startswith("# taskloom compare: hand") and "## Per variant" in text
    assert "| acc | accuracy | true | hard+equal | multi | 0.86 |" in text
    assert "| groups-2 | groups | 2 |" in text and "{acc} \\| {err}" in text


def test_undefined_values_are_blank_and_pipes_escaped():
    rows = [{"a": None, "b": float("nan"), "c": "x|y"}]
    assert rows_to_csv(rows, ["a", "b", "c"]) == "a,b,c\n,,x|y\n"
    assert rows_to_markdown(rows, ["a", "b", "c"]).splitlines()[-1] == "|  |  | x\\|y |"
