"""Auxiliary ablations of built-in auxiliaries: "without X" drops X from config.auxiliaries, nothing else."""
from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch

from taskloom.balancing.auxiliary_weighting import AuxiliaryWeighting
from taskloom.config import ConfigError, parse_config
from taskloom.train.ablation import config_without, masking_auxiliaries
from taskloom.train.grid import GridSpec, cell_config, cell_splits, load_splits, plan_cells, resolve_spec, run_grid
from taskloom.train.runner import build_trainer

MAIN = "y"
FEATURE = "aux_feature_f3"
RECONSTRUCT = "aux_reconstruct"


@pytest.fixture
def table(tmp_path):
    """``y`` depends on f1 and on f3, the column the feature auxiliary withholds."""
    rng = np.random.default_rng(5)
    n = 200
    frame = pd.DataFrame({"f1": rng.normal(size=n), "f2": rng.normal(size=n), "f3": 10 + 4 * rng.normal(size=n)})
    frame["y"] = frame.f1 + 0.2 * frame.f3 + 0.3 * rng.normal(size=n)
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def _config(tmp_path, table, **options):
    return parse_config({
        "name": "builtin", "data": {"dataset": "table", "options": {"path": str(table), **options}},
        "tasks": [{"name": MAIN, "kind": "regression", "target": "y"}],
        "auxiliaries": [{"kind": "feature", "column": "f3", "gating": "weighted", "weight": 0.5},
                        {"kind": "reconstruct", "mask": 0.34, "seed": 2, "schedule": "cosine"}],
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
        "train": {"epochs": 1, "batch_size": 64, "num_threads": 1}, "output_dir": str(tmp_path / "runs")})


def test_config_without_drops_each_kind_and_keeps_the_others_weighting(tmp_path, table):
    config = _config(tmp_path, table)
    without_reconstruct = config_without(config, [RECONSTRUCT])
    (kept,) = without_reconstruct.auxiliaries
    assert (kept.task_name, kept.weight, kept.gating, kept.schedule) == (FEATURE, 0.5, "weighted", "constant")
    assert "exclude" not in without_reconstruct.data.options  # the feature auxiliary still withholds f3
    without_feature = config_without(config, [FEATURE])
    (kept,) = without_feature.auxiliaries
    assert (kept.task_name, kept.mask, kept.seed, kept.schedule) == (RECONSTRUCT, 0.34, 2, "cosine")
    assert without_feature.data.options["exclude"] == ["f3"]  # withheld from the inputs all the same
    listed = config_without(_config(tmp_path, table, features=["f1", "f2", "f3"]), [FEATURE])
    assert listed.data.options["features"] == ["f1", "f2"]
    assert config_without(config, [FEATURE, RECONSTRUCT]).auxiliaries == []
    assert config_without(config, []) is config
    assert masking_auxiliaries(config, [FEATURE, RECONSTRUCT]) == (RECONSTRUCT,)


def test_config_without_drops_a_listed_auxiliary_and_settings_naming_it(tmp_path, table):
    raw = _config(tmp_path, table).model_dump()
    raw["tasks"].append({"name": "hint", "kind": "regression", "target": "f2", "role": "auxiliary",
                         "auxiliary": {"weight": 0.3}})
    raw["selection"] = {"score": "weighted", "weights": {MAIN: 1.0, "hint": 0.0}}
    config = parse_config(raw)
    out = config_without(config, ["hint"])
    assert [t.name for t in out.tasks] == [MAIN]
    assert out.selection.weights == {MAIN: 1.0}
    assert [a.task_name for a in out.auxiliaries] == [FEATURE, RECONSTRUCT]


def test_config_without_refuses_a_main_or_unknown_task(tmp_path, table):
    config = _config(tmp_path, table)
    with pytest.raises(ConfigError, match=r"'y' is no auxiliary task.*aux_feature_f3"):
        config_without(config, [MAIN])
    with pytest.raises(ConfigError, match="'aux_feature_f9' is no auxiliary task"):
        config_without(config, ["aux_feature_f9"])


def test_plan_has_no_baseline_for_builtin_auxiliaries_and_ablates_each():
    spec = GridSpec(methods=["equal"], architectures=["hard"], seeds=[0])
    names = [MAIN, FEATURE, RECONSTRUCT]
    cells = plan_cells(spec, names, [FEATURE, RECONSTRUCT], [FEATURE, RECONSTRUCT])
    assert [(c.key, c.tasks, c.without) for c in cells] == [
        ("single/y/seed0", (MAIN,), (FEATURE, RECONSTRUCT)),
        ("hard+equal/seed0", (MAIN, FEATURE, RECONSTRUCT), ()),
        (f"hard+equal-without-{FEATURE}/seed0", (MAIN, RECONSTRUCT), (FEATURE,)),
        (f"hard+equal-without-{RECONSTRUCT}/seed0", (MAIN, FEATURE), (RECONSTRUCT,)),
        ("hard+equal-no-auxiliaries/seed0", (MAIN,), (FEATURE, RECONSTRUCT)),
    ]


def _balancer_specs(config, spec, cell, splits):
    settings = cell_config(config, spec, cell)
    tasks = [t for t in splits.tasks if t.name in cell.tasks]
    trainer = build_trainer(settings, tasks, splits, None, cell.model_name, balancing=cell.kind != "single")
    balancer = trainer.balancer
    return ({name: (s.weight, s.schedule, s.gating) for name, s in balancer.auxiliary.items()}
            if isinstance(balancer, AuxiliaryWeighting) else None)


def test_each_cell_trains_on_the_inputs_and_weighting_it_should(tmp_path, table):
    config = _config(tmp_path, table)
    spec = GridSpec(methods=["equal"], architectures=["hard"], seeds=[0])
    data = load_splits(config, spec)
    cells = {c.variant: c for c in plan_cells(spec, [t.name for t in data[0].tasks], [FEATURE, RECONSTRUCT],
                                             [FEATURE, RECONSTRUCT])}
    full = data[0]
    assert full.in_features == 2  # f3 is withheld
    reloaded = {}
    whole = cell_splits(config, cells[f"hard+equal-without-{RECONSTRUCT}"], data, reloaded)
    assert whole.in_features == 2 and RECONSTRUCT not in {t.name for t in whole.tasks}
    changed = full.train.inputs != whole.train.inputs
    assert changed.sum(dim=1).tolist() == [1] * len(full.train)  # round(0.34 * 2) masked input per row, back
    assert torch.all(full.train.inputs[changed] == 0) and torch.all(whole.train.inputs[changed] != 0)
    assert torch.equal(full.test.inputs, whole.test.inputs) and torch.equal(full.val.inputs, whole.val.inputs)
    assert cell_splits(config, cells["single"], data, reloaded) is whole  # baselines: whole inputs, loaded once
    assert cell_splits(config, cells[f"hard+equal-without-{FEATURE}"], data, reloaded) is full
    assert _balancer_specs(config, spec, cells["hard+equal"], full) == {FEATURE: (0.5, "constant", "weighted"),
                                                                        RECONSTRUCT: (1.0, "cosine", "none")}
    assert _balancer_specs(config, spec, cells[f"hard+equal-without-{RECONSTRUCT}"], whole) == {
        FEATURE: (0.5, "constant", "weighted")}
    assert _balancer_specs(config, spec, cells[f"hard+equal-without-{FEATURE}"], full) == {
        RECONSTRUCT: (1.0, "cosine", "none")}
    assert _balancer_specs(config, spec, cells["hard+equal-no-auxiliaries"], whole) is None


def test_compare_judges_each_builtin_auxiliary(tmp_path, table):
    config = _config(tmp_path, table)
    run_dir = tmp_path / "runs" / "c"
    compare = run_grid(config, resolve_spec(config, seeds=2), run_dir)
    assert set(compare["variants"]) == {"single", "hard+equal", f"hard+equal-without-{FEATURE}",
                                        f"hard+equal-without-{RECONSTRUCT}", "hard+equal-no-auxiliaries"}
    assert sorted(p.name for p in (run_dir / "single").iterdir()) == [MAIN]
    for name, lacking in ((f"hard+equal-without-{FEATURE}", FEATURE), (f"hard+equal-without-{RECONSTRUCT}",
                                                                       RECONSTRUCT)):
        model = json.loads((run_dir / name / "seed0" / "model.json").read_text())
        heads = [t["name"] for t in model["tasks"]]
        assert lacking not in heads and MAIN in heads
        assert model["input"]["shape"] == [2]  # f3 stays withheld without its auxiliary
        assert lacking not in [a.task_name for a in cell_config(config, resolve_spec(config, seeds=2),
                                                                _cell(compare, name)).auxiliaries]
    effects = {e["auxiliary"]: e for e in compare["analysis"]["auxiliary"]}
    assert set(effects) == {FEATURE, RECONSTRUCT, "all auxiliaries"}
    for effect in effects.values():
        row = effect["tasks"][MAIN]
        with_values = [compare["variants"]["hard+equal"]["values"][u][MAIN] for u in ("0", "1")]
        without_values = [compare["variants"][effect["variant"]]["values"][u][MAIN] for u in ("0", "1")]
        assert row["with"] == pytest.approx(np.mean(with_values))
        assert row["without"] == pytest.approx(np.mean(without_values))
    with open(run_dir / "compare-auxiliary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["auxiliary"], r["task"]) for r in rows} >= {(FEATURE, MAIN), (RECONSTRUCT, MAIN)}
    section = (run_dir / "compare.md").read_text().split("Auxiliary tasks", 1)[1]
    assert FEATURE in section and RECONSTRUCT in section


def _cell(compare, variant):
    from taskloom.train.grid import Cell

    result = compare["cells"][f"{variant}/seed0"]
    return Cell(f"{variant}/seed0", result["variant"], result["kind"], result["seed"], tuple(result["tasks"]),
                result["architecture"], result["balancing"], result["split"], tuple(result["without"]))
