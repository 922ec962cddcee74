"""Verdicts and delta-m over seeds against hand-computed examples, higher- and lower-is-better."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from taskloom.evaluate.verdict import (
    HELPS, HURTS, NOISE, UNDECIDED, UNDEFINED, combined_interval, compare_variants, mean_std, t_interval,
    task_verdict,
)


def test_mean_std_and_t_interval_by_hand():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, None)
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2}
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert t_interval([5.0]) == (5.0, None, None)


def test_paired_gain_on_a_higher_is_better_metric_helps():
    single, multi = [0.80, 0.82, 0.81], [0.85, 0.86, 0.87]
    verdict = task_verdict(multi, single, higher_is_better=True, paired=True)
    # differences 0.05, 0.04, 0.06: mean 0.05, sd 0.01, t = 0.05 / (0.01 / sqrt 3)
    t = 0.05 / (0.01 / math.sqrt(3))
    assert verdict.p_value == pytest.approx(2 * stats.t.sf(t, 2), rel=1e-6)
    assert verdict.verdict == HELPS and "paired" in verdict.test


def test_higher_error_on_a_lower_is_better_metric_hurts():
    single, multi = [1.00, 1.10, 0.90], [1.15, 1.32, 1.08]
    verdict = task_verdict(multi, single, higher_is_better=False, paired=True)
    assert verdict.verdict == HURTS
    assert task_verdict(single, multi, higher_is_better=False, paired=True).verdict == HELPS


def test_constant_difference_is_decisive_and_equal_values_are_noise():
    assert task_verdict([1.2, 1.3], [1.0, 1.1], False, paired=True).verdict == HURTS
    assert task_verdict([1.0, 1.1], [1.0, 1.1], False, paired=True).verdict == NOISE


def test_overlapping_seeds_are_within_noise_by_welch():
    verdict = task_verdict([0.80, 0.86, 0.78], [0.82, 0.79, 0.84, 0.80], True)
    assert verdict.verdict == NOISE and "Welch" in verdict.test
    expected = stats.ttest_ind([0.80, 0.86, 0.78], [0.82, 0.79, 0.84, 0.80], equal_var=False).pvalue
    assert verdict.p_value == pytest.approx(expected)


def test_one_seed_decides_nothing_in_the_seed_only_test():
    verdict = task_verdict([0.90], [0.80], True)  # +12.5 %: no fixed percentage rule turns it into a verdict
    assert verdict.verdict == UNDECIDED and verdict.p_value is None


def _grid(seeds_multi=("0", "1")):
    tasks = {"acc": {"metric": "accuracy", "higher_is_better": True},
             "err": {"metric": "mse", "higher_is_better": False}}
    single = {"0": {"acc": 0.80, "err": 2.0}, "1": {"acc": 0.80, "err": 2.0}}
    multi_values = {"0": {"acc": 0.84, "err": 2.1}, "1": {"acc": 0.88, "err": 1.9}}
    return {"dataset": "toy", "tasks": tasks, "baseline": "single",
            "variants": {"single": {"kind": "single", "values": single, "parameters": 100},
                         "hard+ew": {"kind": "multi", "values": {s: multi_values[s] for s in seeds_multi},
                                     "parameters": 60}}}


def test_delta_m_per_seed_and_its_interval_by_hand():
    result = compare_variants(_grid())
    dm = result["variants"]["hard+ew"]["delta_m"]
    # per seed, against the baseline mean (0.80, 2.0): seed 0: acc +5 %, mse -5 % -> 0; seed 1: +10 %, +5 % -> 7.5
    assert dm["per_unit"] == pytest.approx({"0": 0.0, "1": 7.5})
    half = 12.706204736174707 * (7.5 / math.sqrt(2)) / math.sqrt(2)  # t_{0.975, 1} x sd / sqrt(n)
    assert (dm["mean"], dm["low"], dm["high"]) == pytest.approx((3.75, 3.75 - half, 3.75 + half))
    assert dm["covers"].startswith("seeds only")  # no replicates given: the interval says what it covers
    rows = result["variants"]["hard+ew"]["tasks"]
    assert rows["acc"]["relative_change"] == pytest.approx(7.5)  # mean 0.86 vs 0.80
    assert rows["err"]["relative_change"] == pytest.approx(0.0)
    assert rows["err"]["verdict"] == NOISE
    assert result["variants"]["hard+ew"]["parameters"] == 60
    assert result["variants"]["single"]["delta_m"] is None


def test_seed_and_row_variances_add_under_the_seeds_degrees_of_freedom():
    per_unit = {"0": 1.0, "1": 2.0, "2": 3.0}
    replicates = np.array([1.0, 3.0] * 50)  # variance 100/99 (ddof 1)
    interval = combined_interval(per_unit, replicates, 2.0, {}, 0.0)
    v_seed, v_rows = 1.0 / 3, 100 / 99
    total = v_seed + v_rows
    df = 2  # three seeds
    half = stats.t.ppf(0.975, df) * math.sqrt(total)
    assert (interval.low, interval.high, interval.df) == pytest.approx((2.0 - half, 2.0 + half, df))
    assert interval.p_value == pytest.approx(2 * stats.t.sf(2.0 / math.sqrt(total), df))
    assert interval.covers == "seeds and test rows"


def test_several_splits_use_the_corrected_resampled_t():
    per_unit = {"a": 1.0, "b": 3.0, "c": 4.0, "d": 6.0}
    split_of = {"a": 0, "b": 0, "c": 1, "d": 1}  # split means 2 and 5
    interval = combined_interval(per_unit, None, 3.5, split_of, overlap=0.25)
    variance = (1 / 2 + 0.25) * 4.5  # (1/J + n_test/n_train) x var of the split means (Nadeau & Bengio 2003)
    half = stats.t.ppf(0.975, 1) * math.sqrt(variance)
    assert (interval.low, interval.high) == pytest.approx((3.5 - half, 3.5 + half))
    assert "Nadeau & Bengio" in interval.method


def test_one_seed_interval_covers_rows_only_and_claims_no_verdict():
    grid = _grid(seeds_multi=("0",))
    grid["variants"]["single"]["values"] = {"0": {"acc": 0.80, "err": 2.0}}
    far = {("hard+ew", "0", "acc"): np.full(200, 0.84) + np.linspace(-1e-3, 1e-3, 200),
           ("single", "0", "acc"): np.full(200, 0.80)}
    row = compare_variants(grid, far)["variants"]["hard+ew"]["tasks"]["acc"]
    assert row["low"] > 0 and row["verdict"] == UNDECIDED and row["covers"].startswith("test rows only")
    near = {("hard+ew", "0", "acc"): 0.80 + np.linspace(-0.05, 0.05, 200), ("single", "0", "acc"): np.full(200, 0.8)}
    assert compare_variants(grid, near)["variants"]["hard+ew"]["tasks"]["acc"]["verdict"] == NOISE


def test_an_undefined_task_is_marked_and_left_out_of_delta_m():
    grid = _grid()
    grid["evaluation"] = {"test": {"err": {"defined": False, "reason": "all 40 labelled targets are the same value"},
                                   "acc": {"defined": True, "reason": None}}}
    variant = compare_variants(grid)["variants"]["hard+ew"]
    assert variant["tasks"]["err"]["verdict"] == UNDEFINED and "same value" in variant["tasks"]["err"]["note"]
    assert variant["delta_m"]["tasks"] == ["acc"] and "err" in variant["delta_m"]["left_out"]
    assert variant["delta_m"]["mean"] == pytest.approx(7.5)  # acc alone


def test_a_model_below_the_trivial_predictor_is_flagged_and_tiny_errors_warn():
    grid = _grid()
    grid["references"] = {"acc": {"trivial": {"accuracy": 0.85}}, "err": {"trivial": {"mse": 400.0}}}
    rows = compare_variants(grid)["variants"]
    assert rows["single"]["tasks"]["acc"]["worse_than_trivial"] is True  # 0.80 < 0.85
    assert rows["hard+ew"]["tasks"]["acc"]["worse_than_trivial"] is False  # 0.86 > 0.85
    assert "r2" in rows["hard+ew"]["tasks"]["err"]["unstable"]  # single-task mse 2.0 is 0.5 % of 400


def test_a_compare_file_without_the_baseline_is_refused():
    grid = _grid()
    grid["baseline"] = "stl"
    with pytest.raises(ValueError, match="baseline variant 'stl'"):
        compare_variants(grid)


def test_unpaired_seeds_use_welch_variances():
    grid = _grid()
    grid["variants"]["hard+ew"]["values"] = {"7": {"acc": 0.84, "err": 2.1}, "8": {"acc": 0.88, "err": 1.9}}
    grid["variants"]["single"]["values"] = {"0": {"acc": 0.80, "err": 2.0}, "1": {"acc": 0.82, "err": 2.1}}
    row = compare_variants(grid)["variants"]["hard+ew"]["tasks"]["acc"]
    a, b = np.var([0.84, 0.88], ddof=1) / 2, np.var([0.80, 0.82], ddof=1) / 2
    df = (a + b) ** 2 / (a ** 2 + b ** 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(a + b) * 100 / 0.81
    change = 100 * (0.86 - 0.81) / 0.81
    assert (row["low"], row["high"]) == pytest.approx((change - half, change + half))


def test_an_auxiliary_task_is_marked_and_left_out_of_delta_m():
    grid = _grid()
    grid["tasks"]["err"]["role"] = "auxiliary"
    variant = compare_variants(grid)["variants"]["hard+ew"]
    assert variant["tasks"]["err"]["role"] == "auxiliary"
    assert variant["delta_m"]["tasks"] == ["acc"] and variant["delta_m"]["left_out"]["err"] == "auxiliary task"
    assert variant["delta_m"]["mean"] == pytest.approx(7.5)  # acc alone: mean 0.86 vs 0.80
