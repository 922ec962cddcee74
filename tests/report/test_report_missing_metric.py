"""The report's Pareto / relative-change section when one task has no metric (e.g. undefined on the test split):
the tasks that have metrics are still drawn, the missing one is named and shown as a grey cell."""
from __future__ import annotations

import json
import re

import pytest

from taskloom.report import html as report_html
from taskloom.report import plots, write_report

TASKS = {"a": {"metric": "auroc", "higher_is_better": True}, "b": {"metric": "mse", "higher_is_better": False},
         "c": {"metric": "auroc", "higher_is_better": True}}


def values(a: float, b: float) -> dict:
    return {"0": {"a": a, "b": b, "c": None}, "1": {"a": a, "b": b, "c": None}}


def pareto_section(text: str) -> str:
    return re.search(r"<section id='pareto'>(.*?)</section>", text, flags=re.S).group(1)


@pytest.fixture
def spied(monkeypatch):
    seen = {}
    strip, scatter = plots.relative_change_strip, plots.pareto_scatter

    def spy_strip(changes, tasks, pareto, baseline):
        seen.update(changes=changes, strip_tasks=list(tasks), pareto=pareto)
        return strip(changes, tasks, pareto, baseline)

    def spy_scatter(variants, tasks, higher, metrics):
        seen.update(scatter_tasks=list(tasks), scatter_variants=variants)
        return scatter(variants, tasks, higher, metrics)

    monkeypatch.setattr(report_html.plots, "relative_change_strip", spy_strip)
    monkeypatch.setattr(report_html.plots, "pareto_scatter", spy_scatter)
    return seen


def test_a_compare_run_with_a_task_without_values_still_draws_the_others(tmp_path, spied):
    compare = {"tasks": TASKS, "seeds": [0, 1], "baseline": "single",
               "variants": {"single": {"kind": "single", "values": values(0.80, 2.0)},
                            "hard+equal": {"kind": "multi", "values": values(0.88, 1.0)},   # +10 %, +50 %
                            "hard+uw": {"kind": "multi", "values": values(0.72, 3.0)}}}     # -10 %, -50 %
    (tmp_path / "compare.json").write_text(json.dumps(compare))
    section = pareto_section(write_report(tmp_path).read_text())
    assert "class='absent'" not in section
    assert "Pareto-optimal over 2 tasks" in section and "): hard+equal.</p>" in section
    assert "Left out of the Pareto front" in section and ": c; grey cells" in section
    assert section.count("<img") == 2
    assert spied["scatter_tasks"] == ["a", "b"]
    assert spied["strip_tasks"] == ["a", "b", "c"]
    assert spied["changes"]["hard+equal"]["a"] == pytest.approx(10.0)
    assert spied["changes"]["hard+equal"]["b"] == pytest.approx(50.0)
    assert spied["changes"]["hard+uw"]["b"] == pytest.approx(-50.0)
    assert spied["changes"]["hard+equal"]["c"] is None  # a grey cell
    # hard+equal is better on a and b than both others: the only undominated variant
    assert spied["pareto"] == {"single": False, "hard+equal": True, "hard+uw": False}


def test_with_one_measured_task_the_strip_is_still_drawn(tmp_path, spied):
    one = {"0": {"a": None, "b": 2.0, "c": None}}
    compare = {"tasks": TASKS, "seeds": [0], "baseline": "single",
               "variants": {"single": {"kind": "single", "values": one},
                            "hard+equal": {"kind": "multi", "values": {"0": {"a": None, "b": 1.5, "c": None}}}}}
    (tmp_path / "compare.json").write_text(json.dumps(compare))
    section = pareto_section(write_report(tmp_path).read_text())
    assert "Pareto-optimal over 1 task (test" in section and "): hard+equal.</p>" in section
    assert ": a, c; grey cells" in section
    assert section.count("<img") == 1 and "task-pair plots need metrics on at least two tasks" in section
    assert spied["changes"]["hard+equal"]["b"] == pytest.approx(25.0)  # mse 2.0 -> 1.5, lower is better
    assert spied["changes"]["hard+equal"]["a"] is None and spied["changes"]["hard+equal"]["c"] is None
    assert "scatter_tasks" not in spied
