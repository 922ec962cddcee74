"""The report's Search section from a hand-made auto.json: counts, curve, importances or why they are absent."""
from __future__ import annotations

import json

from taskloom.report import write_report

AUTO = {
    "trials": [
        {"number": 0, "state": "complete", "params": {"architecture": "hard", "lr": 0.01}, "value": 3.0,
         "seconds": 1.5},
        {"number": 1, "state": "pruned", "params": {"architecture": "mmoe", "lr": 0.2}, "value": -9.0,
         "seconds": 0.2},
        {"number": 2, "state": "pruned", "params": {"architecture": "ple", "lr": 0.3}, "value": -7.0,
         "seconds": 0.3},
    ],
    "counts": {"complete": 1, "pruned": 2},
    "best_so_far": [{"trial": 0, "seconds": 1.5, "value": 3.0, "best": 3.0}],
    "importances": {"omitted": "needs at least 2 complete trials, the study has 1"},
    "recommendation": {"text": "Single-task models are recommended: <not significant>"},
}


def test_the_search_section_shows_counts_curve_trials_and_why_importances_are_absent(tmp_path):
    (tmp_path / "auto.json").write_text(json.dumps(AUTO))
    text = write_report(tmp_path).read_text()
    section = text.split("<section id='search'><h2>Search</h2>", 1)[1].split("</section>", 1)[0]
    assert "3 trials: 1 complete, 2 pruned." in section
    assert "best validation score so far" in section and "data:image/png;base64," in section
    assert "Parameter importances omitted: needs at least 2 complete trials" in section
    assert "&lt;not significant&gt;" in section  # escaped
    assert section.count("<td>pruned</td>") == 2 and "<td>ple</td>" in section
    assert "<a href='#search'>Search</a>" in text


def test_a_run_without_auto_json_has_no_search_section(tmp_path):
    assert "id='search'" not in write_report(tmp_path).read_text()
