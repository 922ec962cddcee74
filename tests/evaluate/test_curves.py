"""Learning-curve signals (after Bingel & Sogaard 2017) on hand-made loss curves."""
from __future__ import annotations

import pytest

from taskloom.evaluate.curves import curve_signals, curve_table, single_task_curves

CURVE = [10.0, 8.0, 6.0, 4.0, 3.0, 2.5, 2.49, 2.48, 2.48, 2.48]


def test_slopes_by_hand():
    signals = curve_signals(CURVE)
    # numpy.gradient: d0 = 8 - 10 = -2, d1 = (6 - 10) / 2 = -2, d4 = (2.5 - 4) / 2, d5 = (2.49 - 3) / 2
    assert signals.slopes[0.1] == pytest.approx(-2.0)  # at epoch index 0.9, between d0 and d1
    assert signals.slopes[0.5] == pytest.approx((-0.75 - 0.255) / 2)  # index 4.5
    assert signals.slopes[0.2] == pytest.approx(-2.0 * 0.2 + -2.0 * 0.8)  # index 1.8: d1 = d2 = -2
    assert signals.relative_slopes[0.1] == pytest.approx(-0.2)
    assert signals.epochs == 10


def test_plateau_is_the_first_epoch_after_which_the_loss_falls_under_one_percent():
    # at epoch 6 (2.5) the rest reaches 2.48: 0.8% < 1%; at epoch 5 (3.0) it still falls 17%
    assert curve_signals(CURVE).plateau_epoch == 6
    assert curve_signals(CURVE, plateau_threshold=0.001).plateau_epoch == 8
    assert curve_signals([10 - e for e in range(10)]).plateau_epoch == 10


def test_a_linear_curve_has_a_constant_slope():
    signals = curve_signals([5.0, 4.0, 3.0, 2.0, 1.0])
    assert all(s == pytest.approx(-1.0) for s in signals.slopes.values())


def test_bad_curves_are_refused():
    with pytest.raises(ValueError, match="at least 2 epochs"):
        curve_signals([1.0])
    with pytest.raises(ValueError, match="NaN"):
        curve_signals([1.0, float("nan")])
    with pytest.raises(ValueError, match="fractions"):
        curve_signals([2.0, 1.0], fractions=(1.5,))


def test_single_task_curves_and_table_from_metric_records():
    records = [
        {"model": "single/a", "epoch": 2, "train_loss": {"a": 1.0}},
        {"model": "single/a", "epoch": 1, "train_loss": {"a": 2.0}},
        {"model": "multitask", "epoch": 1, "train_loss": {"a": 9.0, "b": 9.0}},
        {"model": "single/b", "epoch": 1, "train_loss": {"b": 3.0}},
    ]
    assert single_task_curves(records) == {"a": [2.0, 1.0], "b": [3.0]}
    table = curve_table(records, {"a": 4.2})
    assert list(table) == ["a"] and table["a"]["gain"] == 4.2
    assert table["a"]["signals"].slopes[0.5] == pytest.approx(-1.0)
