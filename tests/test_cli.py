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


def _compare(run_dir) -> dict:
    return json.loads(open(f"{run_dir}/compare.json").read())


def test_train_then_resume_a_finished_run(tmp_path, table, capsys):
    assert main(["train", str(_config(tmp_path, table))]) == 0
    run_dir = _run_dir(capsys)
    compare = _compare(run_dir)
    assert compare["baseline"] is None and list(compare["variants"]) == ["hard+equal"]
    test = compare["cells"]["hard+equal/seed0"]["test"]
    assert set(test) == {"click", "buy", "spend"}
    lines = open(f"{run_dir}/metrics.jsonl").read().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert main(["train", "--resume", run_dir]) == 0  # nothing left to do: the same results
    assert _compare(run_dir)["cells"]["hard+equal/seed0"]["test"] == test


def test_train_with_baselines_writes_the_comparison(tmp_path, table, capsys):
    assert main(["train", str(_config(tmp_path, table)), "--baselines", "--epochs", "1"]) == 0
    run_dir = _run_dir(capsys)
    compare = _compare(run_dir)
    assert set(compare["tasks"]) == {"click", "buy", "spend"} and compare["baseline"] == "single"
    assert compare["variants"]["single"]["parameters"] > compare["variants"]["hard+equal"]["parameters"]
    models = {json.loads(line)["model"] for line in open(f"{run_dir}/metrics.jsonl")}
    assert models == {"hard+equal", "single/click", "single/buy", "single/spend"}


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
    assert not (tmp_path / "resumed" / "compare.json").exists()
    assert main(["train", "--resume", str(tmp_path / "resumed")]) == 0
    resumed = _compare(tmp_path / "resumed")
    key = "hard+equal/seed0"
    assert resumed["cells"][key]["test"] == json.loads(json.dumps(straight["cells"][key]["test"]))
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_run_table_numbers_follow_the_definition_of_delta_m(tmp_path, table, capsys):
    assert main(["run", str(_config(tmp_path, table)), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    run_dir = out.split("run directory:")[1].split()[0]
    compare = _compare(run_dir)
    tasks, values = compare["tasks"], compare["variants"]
    assert tasks["spend"]["metric"] == "mse" and tasks["spend"]["higher_is_better"] is False
    assert tasks["click"]["metric"] == "auroc" and tasks["click"]["higher_is_better"] is True
    rows = compare["analysis"]["variants"]["hard+equal"]["tasks"]
    changes = {}
    for name, spec in tasks.items():
        single, multi = values["single"]["values"]["0"][name], values["hard+equal"]["values"]["0"][name]
        assert single == compare["cells"][f"single/{name}/seed0"]["test"][name][spec["metric"]]
        assert multi == compare["cells"]["hard+equal/seed0"]["test"][name][spec["metric"]]
        sign = 1 if spec["higher_is_better"] else -1  # Maninis et al. 2019: (-1)^l_i, l_i = 1 when lower is better
        changes[name] = 100 * sign * (multi - single) / abs(single)
        assert rows[name]["relative_change"] == pytest.approx(changes[name], rel=1e-12)
        assert rows[name]["covers"].startswith("test rows only")  # one seed: the interval says what it covers
        assert rows[name]["low"] < rows[name]["relative_change"] < rows[name]["high"]
        assert rows[name]["verdict"] in ("within noise", "undecided (1 seed)")  # never from a fixed percentage
    dm = compare["analysis"]["variants"]["hard+equal"]["delta_m"]
    assert dm["tasks"] == sorted(changes)
    assert dm["mean"] == pytest.approx(sum(changes.values()) / len(changes), rel=1e-12)
    assert f"{dm['mean']:.2f}" in out and "test rows only" in out
    assert values["single"]["inference_seconds"] > 0 and values["hard+equal"]["inference_seconds"] > 0


def test_bad_options_are_refused_before_any_run_directory_exists(tmp_path, table, capsys):
    path = _config(tmp_path, table, balancing={"method": "static", "options": {"weight": {"click": 1}}})
    assert main(["train", str(path)]) == 2
    out = capsys.readouterr().out
    assert "balancing.options.weight: unknown option; known: " in out and "weights" in out.split("known: ")[1]
    assert not (tmp_path / "runs").exists()
