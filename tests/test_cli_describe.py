"""`taskloom describe DATASET` lists a data set's options; a table run shows which features it chose."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import yaml

from taskloom.cli import main


def test_describe_table_shows_every_option_with_its_default(capsys):
    assert main(["describe", "table"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for option, default in (("path", "None"), ("features", "None"), ("categorical", "None"), ("impute", "None"),
                            ("exclude", "()"), ("coerce_numeric", "()"), ("stratify", "True")):
        assert f"│ {option} " in out and default in out.split(f"│ {option} ")[1].split("│")[1], option
    assert "set by data.split.stratify" in out and "set by data.split_seed" in out
    assert "│ impute │ None │ \"mean\" fills empty numeric feature cells" in out  # from the loader's docstring


def test_option_descriptions_keep_their_continuation_lines():
    from taskloom.data.datasets import describe_options

    features = next(row for row in describe_options("table") if row["option"] == "features")
    assert features["description"].endswith("(then constant columns are dropped, identifiers and dates refused)")


def test_every_data_set_describes_each_option():
    from taskloom.data.datasets import describe_options

    for name in ("adult", "multimnist", "synthetic", "table", "yeast"):
        blank = [row["option"] for row in describe_options(name) if not row["description"]]
        assert blank == [], (name, blank)


def test_describe_an_unknown_data_set_lists_the_known_ones(capsys):
    assert main(["describe", "tabel"]) == 2
    out = capsys.readouterr().out
    assert "unknown data set 'tabel'" in out and "table" in out.split("known:")[1]


def test_list_points_to_describe(capsys):
    assert main(["list"]) == 0
    assert "taskloom describe DATASET" in capsys.readouterr().out


def test_a_table_run_reports_its_features_without_verbose(tmp_path, caplog, capsys):
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({"x": rng.normal(size=n), "constant": 1.0, "level": rng.integers(0, 4, n),
                          "y": rng.integers(0, 2, n)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    config = {"data": {"dataset": "table", "options": {"path": str(tmp_path / "t.csv")}},
              "tasks": [{"name": "y", "kind": "binary", "target": "y"}],
              "model": {"trunk": {"name": "mlp", "options": {"hidden": [4]}}},
              "train": {"epochs": 1, "batch_size": 16}, "output_dir": str(tmp_path / "runs")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "c.yaml")]) == 0
    reported = [r.getMessage() for r in caplog.records if r.name == "taskloom.data.report"]
    assert any("numeric (2): x, level" in m for m in reported)
    assert any("'constant' dropped: constant" in m for m in reported)
    assert any("'level' is numeric: whole numbers with only 4 distinct values" in m for m in reported)
    assert logging.getLogger("taskloom.data.report").getEffectiveLevel() == logging.INFO
