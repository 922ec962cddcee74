"""The fault-injection hook: it fires only at the named point, epoch and model, and a typo is refused."""
from __future__ import annotations

import signal

import pytest

from taskloom.train import faults
from taskloom.train.faults import FAULT_VARIABLE, fault_point


@pytest.fixture
def kills(monkeypatch):
    sent = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(faults.os, "getpid", lambda: 4242)
    return sent


def test_unset_it_does_nothing(kills, monkeypatch):
    monkeypatch.delenv(FAULT_VARIABLE, raising=False)
    for point in faults.POINTS:
        fault_point(point, 1, "multitask")
    assert kills == []


def test_it_fires_at_the_named_point_and_epoch_only(kills, monkeypatch):
    monkeypatch.setenv(FAULT_VARIABLE, "after_log:2")
    fault_point("after_log", 1, "hard+equal")
    fault_point("after_last", 2, "hard+equal")
    fault_point("after_log", 12, "hard+equal")
    assert kills == []
    fault_point("after_log", 2, "hard+equal")
    assert kills == [(4242, signal.SIGKILL)]


def test_a_model_filter_matches_part_of_the_model_name(kills, monkeypatch):
    monkeypatch.setenv(FAULT_VARIABLE, "write_last:3@single/y1")
    fault_point("write_last", 3, "single/y2")
    fault_point("write_last", 3, "hard+equal")
    assert kills == []
    fault_point("write_last", 3, "single/y1")
    assert kills == [(4242, signal.SIGKILL)]


def test_an_unknown_point_is_refused_naming_the_variable(kills, monkeypatch):
    monkeypatch.setenv(FAULT_VARIABLE, "after_logg:2")
    with pytest.raises(ValueError, match="TASKLOOM_FAULT='after_logg:2': unknown point 'after_logg'"):
        fault_point("after_log", 2, "m")
    assert kills == []
