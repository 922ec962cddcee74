"""`taskloom predict` on bad input: exit status 2, a message naming the column / row / option, no output file."""
from __future__ import annotations

import numpy as np
import pytest

from taskloom.cli import main


def _write(tmp_path, frame, name="rows.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _rows(plain_run):
    return plain_run[1].head(6).copy().reset_index(drop=True)


def _case_missing_column(run, tmp):
    return [str(_write(tmp, _rows(run).drop(columns="income")))], ["'income'", "missing feature column"]


def _case_text_number(run, tmp):
    rows = _rows(run).astype({"age": object})
    rows.loc[3, "age"] = "forty"
    return [str(_write(tmp, rows))], ["row 3 (line 5 of", "'age'", "'forty' is not a number"]


def _case_infinite(run, tmp):
    rows = _rows(run)
    rows.loc[2, "income"] = np.inf
    return [str(_write(tmp, rows))], ["row 2 (line 4 of", "'income'", "not a finite number"]


def _case_empty_cell(run, tmp):
    rows = _rows(run)
    rows.loc[4, "age"] = np.nan
    return [str(_write(tmp, rows))], ["row 4 (line 6 of", "'age'", "empty"]


def _case_unseen_category(run, tmp):
    rows = _rows(run)
    rows.loc[1, "channel"] = "fax"
    return [str(_write(tmp, rows)), "--unknown-categories", "error"], ["row 1 (line 3 of", "'channel'", "'fax'"]


def _case_unknown_task(run, tmp):
    return [str(_write(tmp, _rows(run))), "--tasks", "churn,profit"], ["tasks: unknown task(s) ['profit']"]


def _case_missing_checkpoint(run, tmp):
    return [str(_write(tmp, _rows(run))), "--checkpoint", "best-profit"], ["'best-profit' does not exist", "'last'"]


def _case_input_and_split(run, tmp):
    return [str(_write(tmp, _rows(run))), "--split", "test"], ["exactly one of INPUT", "--split"]


def _case_no_input(run, tmp):
    return [], ["exactly one of INPUT"]


def _case_no_file(run, tmp):
    return [str(tmp / "nowhere.csv")], ["nowhere.csv", "does not exist"]


def _case_out_is_input(run, tmp):
    path = _write(tmp, _rows(run))
    return [str(path), "--out", str(path)], ["is the input file"]


def _case_header_only(run, tmp):
    return [str(_write(tmp, _rows(run).head(0)))], ["has no rows"]


CASES = [_case_missing_column, _case_text_number, _case_infinite, _case_empty_cell, _case_unseen_category,
         _case_unknown_task, _case_missing_checkpoint, _case_input_and_split, _case_no_input, _case_no_file,
         _case_out_is_input, _case_header_only]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[6:] for c in CASES])
def test_predict_refuses_bad_input_naming_what_to_fix(plain_run, tmp_path, capsys, case):
    arguments, expected = case(plain_run, tmp_path)
    out = tmp_path / "predictions.csv"
    if "--out" not in arguments:
        arguments = arguments + ["--out", str(out)]
    assert main(["predict", str(plain_run[0]), *arguments]) == 2
    message = "".join(capsys.readouterr().out.split())  # rich wraps long lines, sometimes eating a space
    for part in expected:
        assert "".join(part.split()) in message, message
    assert not out.exists()
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written output either


def test_a_directory_without_a_model_is_refused(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--split", "test"]) == 2
    assert "has no model.json" in capsys.readouterr().out.replace("\n", "")
