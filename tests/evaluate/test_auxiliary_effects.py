""""Does auxiliary X help?": the full variant against its ablation, on hand-made compare.json files."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from taskloom.evaluate.table import AUXILIARY_COLUMNS, DELTA_M_ROW, auxiliary_rows
from taskloom.evaluate.verdict import NO_EVIDENCE, UNDEFINED, auxiliary_effects, compare_variants


def _grid(with_acc, without_acc, with_err, without_err):
    """Three seeds; ``acc`` (higher is better) and ``err`` (lower) are main tasks, ``aux`` is auxiliary."""
    tasks = {"acc": {"metric": "accuracy", "higher_is_better": True},
             "err": {"metric": "mse", "higher_is_better": False},
             "aux": {"metric": "mse", "higher_is_better": False, "role": "auxiliary"}}
    full = {str(s): {"acc": with_acc[s], "err": with_err[s], "aux": 1.0} for s in range(3)}
    ablated = {str(s): {"acc": without_acc[s], "err": without_err[s]} for s in range(3)}
    single = {str(s): {"acc": 0.5, "err": 2.0, "aux": 1.0} for s in range(3)}
    return {"tasks": tasks, "baseline": "single",
            "variants": {"single": {"kind": "single", "values": single},
                         "hard+equal": {"kind": "multi", "values": full},
                         "hard+equal-without-aux": {"kind": "ablation", "reference": "hard+equal", "without": ["aux"],
                                                    "values": ablated}}}


def _seed_interval(ours, theirs, sign):
    """The seeds-only paired interval by hand: changes against the ablation's mean, t with S - 1 df."""
    base = float(np.mean(theirs))
    changes = [100 * sign * (a - b) / abs(base) for a, b in zip(ours, theirs)]
    mean = float(np.mean(changes))
    half = stats.t.ppf(0.975, 2) * float(np.std(changes, ddof=1)) / math.sqrt(3)
    return mean, mean - half, mean + half


def test_with_versus_without_by_hand_helps_and_hurts():
    with_acc, without_acc = [0.80, 0.82, 0.84], [0.70, 0.71, 0.75]  # +0.1, +0.11, +0.09: helps
    with_err, without_err = [1.30, 1.42, 1.35], [1.00, 1.10, 1.02]  # errors up by 0.30, 0.32, 0.33: hurts
    (effect,) = auxiliary_effects(_grid(with_acc, without_acc, with_err, without_err))
    assert effect["auxiliary"] == "aux" and effect["reference"] == "hard+equal" and sorted(effect["tasks"]) == [
        "acc", "err"]
    acc, err = effect["tasks"]["acc"], effect["tasks"]["err"]
    mean, low, high = _seed_interval(with_acc, without_acc, 1.0)
    assert (acc["relative_change"], acc["low"], acc["high"]) == pytest.approx((mean, low, high))
    assert acc["with"] == pytest.approx(0.82) and acc["without"] == pytest.approx(0.72)
    assert acc["difference"] == pytest.approx(0.10) and acc["verdict"] == "helps" and low > 0
    mean_e, low_e, high_e = _seed_interval(with_err, without_err, -1.0)
    assert (err["relative_change"], err["low"], err["high"]) == pytest.approx((mean_e, low_e, high_e))
    assert err["verdict"] == "hurts" and high_e < 0
    dm = effect["delta_m"]
    assert dm["mean"] == pytest.approx((mean + mean_e) / 2) and dm["left_out"] == {"aux": "auxiliary task"}


def test_noise_is_no_evidence_and_the_analysis_carries_the_effects():
    grid = _grid([0.80, 0.70, 0.75], [0.75, 0.76, 0.74], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    (effect,) = compare_variants(grid)["auxiliary"]
    assert effect["tasks"]["acc"]["verdict"] == NO_EVIDENCE and effect["tasks"]["acc"]["detail"] == "within noise"
    assert effect["tasks"]["err"]["relative_change"] == 0.0 and effect["tasks"]["err"]["verdict"] == NO_EVIDENCE
    assert "auxiliary" not in compare_variants({**grid, "variants": {
        k: v for k, v in grid["variants"].items() if v["kind"] != "ablation"}})


def test_one_seed_and_undefined_tasks_claim_nothing():
    grid = _grid([0.9, 0.9, 0.9], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    for variant in grid["variants"].values():
        variant["values"] = {"0": variant["values"]["0"]}
    grid["evaluation"] = {"test": {"err": {"defined": False, "reason": "constant labels"}}}
    (effect,) = auxiliary_effects(grid)
    assert effect["tasks"]["acc"]["verdict"] == NO_EVIDENCE  # +80 % on one seed: no interval, no claim
    assert effect["tasks"]["err"]["verdict"] == UNDEFINED
    assert effect["delta_m"]["tasks"] == ["acc"] and "constant labels" in effect["delta_m"]["left_out"]["err"]


def test_table_rows_per_auxiliary_and_main_task():
    grid = _grid([0.80, 0.82, 0.84], [0.70, 0.71, 0.75], [1.30, 1.42, 1.35], [1.00, 1.10, 1.02])
    rows = auxiliary_rows(grid)
    assert [r["task"] for r in rows] == ["acc", "err", DELTA_M_ROW]
    assert set(rows[0]) == set(AUXILIARY_COLUMNS)
    assert rows[0]["with_variant"] == "hard+equal" and rows[0]["without_variant"] == "hard+equal-without-aux"
    assert rows[0]["with_mean"] == pytest.approx(0.82) and rows[0]["verdict"] == "helps"
    assert rows[1]["verdict"] == "hurts"


def test_a_missing_full_variant_is_named():
    grid = _grid([0.8] * 3, [0.7] * 3, [1.0] * 3, [1.0] * 3)
    grid["variants"]["hard+equal-without-aux"]["reference"] = "hard+pcgrad"
    (effect,) = auxiliary_effects(grid)
    assert "hard+pcgrad" in effect["note"] and effect["tasks"] == {}
