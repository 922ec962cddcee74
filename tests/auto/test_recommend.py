"""The recommendation on hand-made final verdicts: multi-task only when delta-m's interval lies above zero."""
from __future__ import annotations

from taskloom.auto.final import recommend


def analysis(mean, low, high):
    return {"variants": {"single": {"delta_m": None},
                         "mmoe+pcgrad": {"delta_m": {"mean": mean, "low": low, "high": high}},
                         "hard+equal": {"delta_m": {"mean": 0.5, "low": -1.0, "high": 2.0}}}}


def test_an_interval_that_includes_zero_recommends_single_task_models():
    out = recommend(analysis(1.2, -0.3, 2.7), "mmoe+pcgrad")
    assert out["choice"] == "single-task"
    assert out["text"].startswith("Single-task models are recommended")
    assert out["delta_m"] == {"mean": 1.2, "low": -0.3, "high": 2.7}
    assert out["reference"]["variant"] == "hard+equal" and out["reference"]["mean"] == 0.5


def test_an_interval_below_zero_recommends_single_task_models():
    assert recommend(analysis(-4.0, -6.0, -2.0), "mmoe+pcgrad")["choice"] == "single-task"


def test_an_interval_above_zero_recommends_the_winner():
    out = recommend(analysis(3.0, 0.4, 5.6), "mmoe+pcgrad")
    assert out["choice"] == "multi-task" and "mmoe+pcgrad is recommended" in out["text"]


def test_no_interval_or_no_delta_m_is_not_evidence_for_multi_task():
    assert recommend(analysis(3.0, None, None), "mmoe+pcgrad")["choice"] == "single-task"
    assert recommend(analysis(None, None, None), "mmoe+pcgrad")["choice"] == "single-task"
    assert recommend({"variants": {}}, "groups-2")["choice"] == "single-task"


def test_the_reference_is_not_compared_with_itself():
    assert "reference" not in recommend(analysis(1.0, 0.2, 1.8), "hard+equal")


def test_one_seed_is_not_evidence_even_when_the_test_row_interval_is_above_zero():
    data = analysis(3.0, 0.4, 5.6)
    data["variants"]["mmoe+pcgrad"]["delta_m"]["covers"] = "test rows only (1 seed: seed noise not measured)"
    out = recommend(data, "mmoe+pcgrad")
    assert out["choice"] == "single-task" and "--seeds" in out["text"]
