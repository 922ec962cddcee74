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


def test_each_task_sees_its_auxiliaries_plateaus_and_slopes():
    from taskloom.evaluate.curves import auxiliary_signals

    early = curve_signals([2.0, 1.0, 1.0, 1.0, 1.0])  # flat from epoch 2 on
    late = curve_signals([5.0, 4.0, 3.0, 2.0, 1.0])   # still falling 1 per epoch: plateau is the last epoch
    also_late = curve_signals([10.0, 8.0, 6.0, 4.0, 2.0])
    table = auxiliary_signals({"main": early, "aux": late, "aux2": also_late})
    assert table["main"]["plateaus"] == {"aux": 5, "aux2": 5}
    # relative slopes at 50%: -1 / 5 and -2 / 10, both -0.2
    assert table["main"]["slope"] == pytest.approx(-0.2)
    assert table["aux"]["plateaus"] == {"main": 2, "aux2": 5}
    # main at 50% (index 2): numpy.gradient (1 - 1) / 2 = 0; aux2 -0.2; mean -0.1
    assert table["aux"]["slope"] == pytest.approx(-0.1)
    assert auxiliary_signals({"alone": early})["alone"] == {"plateaus": {}, "epochs": {}, "slope": None}


def test_the_module_states_the_finding_the_right_way_round():
    import taskloom.evaluate.curves as curves

    text = " ".join(curves.__doc__.split())
    assert "main task's single-task learning curve flattens early" in text
    assert "auxiliary tasks' curves keep improving" in text and "plateaus late" not in text
