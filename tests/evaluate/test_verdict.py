"""Verdicts and delta-m over seeds against hand-computed examples, higher- and lower-is-better."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from taskloom.evaluate.verdict import (
    HELPS, HURTS, NOISE, NOISE_ONE_SEED, compare_variants, mean_std, t_interval, task_verdict,
    verdicts_from_comparison,
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


def test_one_seed_rule_uses_the_five_percent_threshold():
    assert task_verdict([0.82], [0.80], True).verdict == NOISE_ONE_SEED  # +2.5%
    assert task_verdict([0.90], [0.80], True).verdict == HELPS  # +12.5%
    assert task_verdict([2.2], [2.0], False).verdict == HURTS  # mse up 10%
    assert task_verdict([1.92], [2.0], False).verdict == NOISE_ONE_SEED  # mse down 4%
    assert task_verdict([1.8], [2.0], False, one_seed_threshold=20).verdict == NOISE_ONE_SEED


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
    # seed 0: acc +5%, mse worse by 5% -> 0; seed 1: acc +10%, mse better by 5% -> +7.5
    assert dm["per_seed"] == pytest.approx({"0": 0.0, "1": 7.5})
    half = 12.706204736174707 * (7.5 / math.sqrt(2)) / math.sqrt(2)  # t_{0.975, 1} x sd / sqrt(n)
    assert (dm["mean"], dm["low"], dm["high"]) == pytest.approx((3.75, 3.75 - half, 3.75 + half))
    assert dm["paired"] is True
    rows = result["variants"]["hard+ew"]["tasks"]
    assert rows["acc"]["relative_change"] == pytest.approx(7.5)  # mean 0.86 vs 0.80
    assert rows["err"]["relative_change"] == pytest.approx(0.0)
    assert rows["err"]["verdict"] == NOISE
    assert result["variants"]["hard+ew"]["parameters"] == 60
    assert result["variants"]["single"]["delta_m"] is None


def test_unpaired_seeds_compare_with_the_baseline_mean():
    result = compare_variants(_grid(seeds_multi=("0",)))
    dm = result["variants"]["hard+ew"]["delta_m"]
    assert dm["paired"] is False and dm["per_seed"] == pytest.approx({"0": 0.0}) and dm["low"] is None
    assert result["variants"]["hard+ew"]["tasks"]["acc"]["verdict"] == NOISE_ONE_SEED


def test_a_compare_file_without_the_baseline_is_refused():
    grid = _grid()
    grid["baseline"] = "stl"
    with pytest.raises(ValueError, match="baseline variant 'stl'"):
        compare_variants(grid)


def test_verdicts_from_a_single_run_comparison():
    comparison = {"tasks": {"acc": {"higher_is_better": True, "single": 0.8, "multi": 0.7},
                            "err": {"higher_is_better": False, "single": 2.0, "multi": 2.02},
                            "gone": {"higher_is_better": True, "single": None, "multi": 0.5}}}
    verdicts = verdicts_from_comparison(comparison)
    assert verdicts["acc"].verdict == HURTS and verdicts["err"].verdict == NOISE_ONE_SEED
    assert "gone" not in verdicts
