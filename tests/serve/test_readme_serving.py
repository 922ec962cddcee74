"""The shell examples of the README's "Using a trained model" run, on a trained run and a user CSV."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

from taskloom.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands() -> list[str]:
    section = README.read_text().split("## Using a trained model", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```sh\n(.*?)```", section, flags=re.S)[0]
    return [line.split("  #")[0].strip() for line in block.strip().splitlines()]


def test_the_readme_serving_commands_run(plain_run, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    import taskloom
    from taskloom.serve.app import create_app

    run_dir, frame, _ = plain_run
    frame.head(25).drop(columns=["churn", "segment", "spend"]).to_csv(tmp_path / "new_customers.csv", index=False)
    monkeypatch.chdir(tmp_path)
    commands = [c.replace("runs/shop-RUN", str(run_dir)) for c in _commands()]
    assert [c.split()[1] if c.startswith("taskloom") else c.split()[0] for c in commands] == [
        "predict", "predict", "export", "python", "serve", "curl"]
    for command in commands[:3]:
        assert main(shlex.split(command)[1:]) == 0, command
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(README.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    python = shlex.split(commands[3])
    subprocess.run([sys.executable, *python[1:]], check=True, env=env, cwd=tmp_path, capture_output=True)
    scored, spend = pd.read_csv("scored.csv"), pd.read_csv("spend.csv")
    assert scored.customer.tolist() == frame.customer.head(25).tolist()
    assert set(pd.read_csv("test.csv").columns) == {"row", "churn", "churn_prob"}
    assert Path("shop.onnx").is_file() and Path("shop.onnx.json").is_file()
    best_spend = taskloom.load(run_dir, checkpoint="best-spend")
    assert best_spend.predict(frame.head(25)).spend.tolist() == spend.spend.tolist()
    serve, curl = shlex.split(commands[4]), shlex.split(commands[5])
    assert serve[serve.index("--port") + 1] == "8000" and "--host" not in serve  # so it binds 127.0.0.1
    url, body = curl[2], json.loads(curl[curl.index("-d") + 1])
    with TestClient(create_app(taskloom.load(run_dir))) as client:
        answer = client.post("/predict?" + url.split("?", 1)[1], json=body)
    assert answer.status_code == 200 and set(answer.json()["predictions"][0]) == {"churn", "churn_prob"}


def test_serve_binds_127_0_0_1_by_default():
    from taskloom.cli import build_parser

    arguments = build_parser().parse_args(["serve", "runs/x"])
    assert arguments.host == "127.0.0.1" and arguments.port == 8000
