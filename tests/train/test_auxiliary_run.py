"""End to end through the CLI: built-in auxiliaries train with the main task and are left out of serving."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from taskloom.cli import main
from taskloom.serve.predictor import load


def test_taskloom_train_with_builtin_auxiliaries_serves_only_the_main_task(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 160
    frame = pd.DataFrame({"f1": rng.normal(size=n), "f2": rng.normal(size=n), "age": rng.normal(40, 10, n)})
    frame["buy"] = ((frame.f1 + (frame.age - 40) / 10) > 0).astype(float)
    frame.to_csv(tmp_path / "t.csv", index=False)
    config = {
        "name": "aux",
        "data": {"dataset": "table", "options": {"path": str(tmp_path / "t.csv")}},
        "tasks": [{"name": "buy", "kind": "binary", "target": "buy"}],
        "auxiliaries": [{"kind": "reconstruct", "mask": 0.5, "weight": 0.5, "schedule": "linear"},
                        {"kind": "feature", "column": "age", "gating": "unweighted"}],
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
        "train": {"epochs": 2, "batch_size": 32},
        "output_dir": str(tmp_path / "runs"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "c.yaml")]) == 0
    run_dir = Path(capsys.readouterr().out.split("run directory:")[1].split()[0])
    predictor = load(run_dir)
    assert predictor.task_names == ["buy"]
    assert predictor.feature_columns == ["f1", "f2"]  # age is withheld: a new row need not carry it
    out = predictor.predict(frame[["f1", "f2"]].head(4))
    assert [c for c in out.columns if c.startswith("aux")] == []
    assert load(run_dir, include_auxiliary=True).task_names == ["buy", "aux_feature_age", "aux_reconstruct"]
    model_dir = next(run_dir.glob("**/model.json")).parent
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["auxiliary"]["aux_reconstruct"]["weight"] == 0.0  # linear decay ends at zero
    assert records[-1]["auxiliary"]["aux_feature_age"]["gate"] is not None
    compare = json.loads((run_dir / "compare.json").read_text())
    assert "aux_feature_age" in json.dumps(compare)  # trained and evaluated like any task
