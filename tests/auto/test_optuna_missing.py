"""Without Optuna, taskloom imports and the auto command says which extra to install."""
from __future__ import annotations

import subprocess
import sys

import pytest

from taskloom.auto import run_auto
from taskloom.cli import main


def test_taskloom_and_its_cli_import_without_optuna():
    code = ("import sys; sys.modules['optuna'] = None; import taskloom, taskloom.cli, taskloom.auto; "
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_auto_without_optuna_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    with pytest.raises(ValueError, match=r"pip install taskloom\[auto\]"):
        run_auto(None, trials=1)
    config = tmp_path / "c.yaml"
    config.write_text("data: {dataset: synthetic}\n")
    assert main(["auto", str(config), "--trials", "1"]) == 2
    assert "pip install taskloom[auto]" in capsys.readouterr().out.replace("\n", "")
