"""Bad tables and configs: each error names the file, field, column or row, and says what to do.

The same inputs through the command line end with exit code 2 and the same words.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import yaml

from taskloom.cli import main
from taskloom.config import ConfigError, parse_config
from taskloom.data.datasets.table import load_table, table_columns
from taskloom.task import Task


def _good_frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=n).round(3), "y": np.arange(n) % 2})


def _write(tmp_path, name: str, content: bytes | pd.DataFrame):
    path = tmp_path / name
    if isinstance(content, pd.DataFrame):
        content.to_csv(path, index=False)
    else:
        path.write_bytes(content)
    return path


def _stray(tmp_path):
    frame = _good_frame().astype({"x": object})
    frame.loc[5, "x"] = "hello"
    return _write(tmp_path, "stray.csv", frame)


# (file name, content, words the message must hold): the file's name is always among them
FILE_CASES = {
    "empty": ("empty.csv", b"", [r"empty\.csv", "empty", "header"]),
    "binary": ("binary.csv", bytes(range(256)) * 4, [r"binary\.csv", "binary file", "Parquet"]),
    "latin-1": ("latin.csv", "x,y\ncaf\u00e9,1\n".encode("latin-1"), [r"latin\.csv", "not UTF-8", "Parquet"]),
    "header only": ("header.csv", b"x,y\n", [r"header\.csv", "has 0 data rows", "at least 6"]),
    "one row": ("one.csv", b"x,y\n1.5,0\n", [r"one\.csv", "has 1 data row;", "at least 6"]),
    "not parquet": ("fake.parquet", b"x,y\n1,2\n", [r"fake\.parquet", "not a readable Parquet"]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_a_bad_table_file_is_named_in_the_error(tmp_path, case):
    name, content, words = FILE_CASES[case]
    path = _write(tmp_path, name, content)
    with pytest.raises(ValueError) as error:
        load_table([Task("y", "binary")], path=path)
    for word in words:
        assert re.search(word, str(error.value)), (word, str(error.value))


def test_a_zero_fraction_names_its_field():
    with pytest.raises(ValueError, match=r"data\.val_fraction is 0.*set it above 0"):
        load_table([Task("y", "binary")], frame=_good_frame(), val_fraction=0.0)


def test_column_names_of_a_bad_file_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"empty\.csv.*empty"):
        table_columns(_write(tmp_path, "empty.csv", b""))
    assert table_columns(_write(tmp_path, "ok.csv", b"a,b\n1,2\n")) == ["a", "b"]


def test_the_python_api_refuses_an_empty_task_list():
    with pytest.raises(ValueError, match=r"no tasks given"):
        load_table([], frame=_good_frame())


def test_an_empty_task_list_in_a_config_names_the_field():
    with pytest.raises(ConfigError, match=r"  tasks: is empty; list at least one task"):
        parse_config({"data": {"dataset": "synthetic"}, "tasks": []})
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.tasks: is empty"):
        parse_config({"data": {"sources": [{"name": "s", "dataset": "synthetic", "tasks": []}]}})


def _config(tmp_path, table, tasks=None) -> str:
    config = {
        "data": {"dataset": "table", "options": {"path": str(table)}},
        "tasks": [{"name": "y", "kind": "binary", "target": "y"}] if tasks is None else tasks,
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [4]}}},
        "train": {"epochs": 1, "batch_size": 16},
        "output_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


CLI_CASES = {
    "header only": (lambda tmp: _write(tmp, "header.csv", b"x,y\n"), None, [r"header\.csv", "has 0 data rows"]),
    "one row": (lambda tmp: _write(tmp, "one.csv", b"x,y\n1.5,0\n"), None, [r"one\.csv", "has 1 data row"]),
    "stray text": (_stray, None, ["feature column 'x'", r"stray\.csv", r"row 5 \(line 7", "'hello'", "coerce_numeric"]),
    "empty task list": (lambda tmp: _write(tmp, "ok.csv", _good_frame()), [], ["tasks: is empty"]),
    "transform on a regression task": (
        lambda tmp: _write(tmp, "ok.csv", _good_frame()),
        [{"name": "y", "kind": "regression", "target": "x", "transform": {"threshold": 0}}],
        [r"tasks\[0\]\.kind: transform\.threshold makes a binary label"],
    ),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_the_command_line_exits_2_naming_the_file_field_or_row(tmp_path, capsys, case):
    make, tasks, words = CLI_CASES[case]
    table = make(tmp_path)
    assert main(["train", _config(tmp_path, table, tasks)]) == 2
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert out.startswith("error:")
    for word in words:
        assert re.search(word, out), (word, out)
