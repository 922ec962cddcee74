"""The command line, end to end on small generated data."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from taskloom.cli import default_run_config, main
from taskloom.config import load_config
from taskloom.train.runner import run_training


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"f1": rng.normal(size=n), "f2": rng.normal(size=n), "colour": rng.choice(["red", "blue"], n)})
    frame["click"] = (frame.f1 + 0.3 * rng.normal(size=n) > 0).astype(float)
    frame["buy"] = ((frame.f1 + frame.f2 > 0.5) & (frame.click == 1)).astype(float)
    frame["spend"] = 2 * frame.f2 + (frame.colour == "red") + 0.1 * rng.normal(size=n)
    frame.loc[rng.random(n) < 0.3, "spend"] = np.nan  # missing labels
    path = tmp_path / "shop.csv"
    frame.to_csv(path, index=False)
    return path


def _config(tmp_path, table, **extra):
    config = {
        "name": "shop",
        "data": {"dataset": "table", "options": {"path": str(table)}},
        "tasks": [
            {"name": "click", "kind": "binary", "target": "click"},
            {"name": "buy", "kind": "binary", "target": "buy", "only_where": {"task": "click", "equals": 1}},
            {"name": "spend", "kind": "regression", "target": "spend"},
        ],
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [16]}}},
        "train": {"epochs": 2, "batch_size": 32},
        "output_dir": str(tmp_path / "runs"),
    }
    config.update(extra)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run_dir(capsys) -> str:
    out = capsys.readouterr().out
    return out.split("run directory:")[1].split()[0]


def test_list_names_what_is_registered(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("multimnist", "adult", "yeast", "synthetic", "table", "binary", "regression", "hard", "equal", "static"):
        assert name in out


def test_train_then_resume_a_finished_run(tmp_path, table, capsys):
    assert main(["train", str(_config(tmp_path, table))]) == 0
    run_dir = _run_dir(capsys)
    results = json.loads((tmp_path / "runs" / run_dir.split("/")[-1] / "results.json").read_text())
    assert set(results["test"]) == {"click", "buy", "spend"}
    lines = open(f"{run_dir}/metrics.jsonl").read().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert main(["train", "--resume", run_dir]) == 0  # nothing left to do: the same results
    assert json.loads(open(f"{run_dir}/results.json").read())["test"] == results["test"]


def test_train_with_baselines_writes_the_comparison(tmp_path, table, capsys):
    assert main(["train", str(_config(tmp_path, table)), "--baselines", "--epochs", "1"]) == 0
    run_dir = _run_dir(capsys)
    comparison = json.loads(open(f"{run_dir}/comparison.json").read())
    assert set(comparison["tasks"]) == {"click", "buy", "spend"}
    assert comparison["parameters"]["single_total"] > comparison["parameters"]["multi"]
    models = {json.loads(line)["model"] for line in open(f"{run_dir}/metrics.jsonl")}
    assert models == {"multitask", "single/click", "single/buy", "single/spend"}


def test_bad_config_errors_name_the_field(tmp_path, table, capsys):
    path = _config(tmp_path, table, tasks=[{"name": "click", "kind": "binary", "target": "clicks"}])
    assert main(["train", str(path)]) == 2
    assert "tasks[0].target: column 'clicks' is not in the table" in capsys.readouterr().out
    path.write_text(yaml.safe_dump({"train": {"epochz": 1}}))
    assert main(["train", str(path)]) == 2
    assert "train.epochz: unknown key" in capsys.readouterr().out


def test_default_run_config_is_the_multimnist_comparison():
    config = default_run_config()
    assert config.data.dataset == "multimnist" and config.model.trunk.name == "lenet"


def test_train_resume_after_an_interruption_ends_like_an_uninterrupted_run(tmp_path, table, capsys):
    config = load_config(_config(tmp_path, table, train={"epochs": 3, "batch_size": 32}))
    straight = run_training(config, tmp_path / "straight")

    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(config, tmp_path / "resumed", callbacks={"epoch": interrupt})
    assert not (tmp_path / "resumed" / "results.json").exists()
    assert main(["train", "--resume", str(tmp_path / "resumed")]) == 0
    resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert resumed["test"] == json.loads(json.dumps(straight["test"]))
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_run_table_numbers_follow_the_definition_of_delta_m(tmp_path, table, capsys):
    assert main(["run", str(_config(tmp_path, table)), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    run_dir = out.split("run directory:")[1].split()[0]
    comparison = json.loads(open(f"{run_dir}/comparison.json").read())
    rows = comparison["tasks"]
    assert rows["spend"]["metric"] == "mse" and rows["spend"]["higher_is_better"] is False
    assert rows["click"]["metric"] == "auroc" and rows["click"]["higher_is_better"] is True
    changes = {}
    for name, row in rows.items():
        assert row["single"] == row["single_all"][row["metric"]] and row["multi"] == row["multi_all"][row["metric"]]
        sign = 1 if row["higher_is_better"] else -1  # Maninis et al. 2019: (-1)^l_i, l_i = 1 when lower is better
        changes[name] = 100 * sign * (row["multi"] - row["single"]) / row["single"]
        assert row["relative_change"] == pytest.approx(changes[name], rel=1e-12)
    assert comparison["delta_m_tasks"] == sorted(changes)
    assert comparison["delta_m"] == pytest.approx(sum(changes.values()) / len(changes), rel=1e-12)
    assert f"delta-m: {comparison['delta_m']:.2f} %" in out
    inference = comparison["inference_seconds"]
    assert set(inference["single"]) == {"click", "buy", "spend"}
    assert inference["single_total"] == pytest.approx(sum(inference["single"].values()))
    assert inference["multi"] > 0 and all(v > 0 for v in inference["single"].values())
    assert "inference time (one pass over the test split): 3 single-task models" in out


def test_bad_options_are_refused_before_any_run_directory_exists(tmp_path, table, capsys):
    path = _config(tmp_path, table, balancing={"method": "static", "options": {"weight": {"click": 1}}})
    assert main(["train", str(path)]) == 2
    out = capsys.readouterr().out
    assert "balancing.options.weight: unknown option; known: " in out and "weights" in out.split("known: ")[1]
    assert not (tmp_path / "runs").exists()
