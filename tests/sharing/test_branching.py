"""Branching (Lu et al. 2017): splits keep the function, the optimizer follows the parameters, the tree is
saved, resumed and loaded, and two groups of related tasks are recovered."""
from __future__ import annotations

import json

import pytest
import torch

import taskloom
from taskloom.cli import main
from taskloom.config import ConfigError, parse_config
from taskloom.data.datasets.synthetic import load_synthetic
from taskloom.sharing import ARCHITECTURES
from taskloom.sharing.branching import BranchingNetwork, build_branching, decode_tree
from taskloom.task import Task
from taskloom.train.checkpoint import load_checkpoint
from taskloom.train.runner import run_training
from taskloom.train.trainer import Trainer
from taskloom.trunks import MLP

TASKS = [Task(name, "regression") for name in ("a1", "a2", "b1", "b2")]


def _model(hidden=(8, 8, 8), **options) -> BranchingNetwork:
    torch.manual_seed(0)
    return build_branching(lambda: MLP(6, hidden), TASKS, **options)


@pytest.fixture(scope="module")
def two_groups():
    """y1, y2 share one direction, y3, y4 another, orthogonal to the first (Ma et al. 2018's generator)."""
    return load_synthetic(n=1500, d=20, num_tasks=4, groups=2, correlation=0.9, seed=0)


def _trainer(splits, run_dir=None, epochs=2, split_every=2) -> Trainer:
    torch.manual_seed(0)
    model = build_branching(lambda: MLP(20, (32, 32)), splits.tasks, alpha=1e-4, max_branches=2,
                            split_every=split_every)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(model, splits.tasks, epochs=epochs, batch_size=64, seed=0, lr=3e-3, run_dir=run_dir)


def test_outputs_are_unchanged_right_after_each_split():
    model = _model()
    x = torch.randn(5, 6)
    before = model(x)
    model.split(2, [[[0, 1], [2, 3]]])  # top layer: the tasks a1 a2 | b1 b2
    after_top = model(x)
    model.split(1, [[[0], [1]]])  # middle layer: its two children go apart
    after_middle = model(x)
    for name in before:
        torch.testing.assert_close(after_top[name], before[name], rtol=0, atol=0)
        torch.testing.assert_close(after_middle[name], before[name], rtol=0, atol=0)
    layers = model.structure()["layers"]
    assert [s["tasks"] for s in layers[2]] == [["a1", "a2"], ["b1", "b2"]]
    assert [s["parent"] for s in layers[2]] == [0, 1] and [s["parent"] for s in layers[1]] == [0, 0]
    assert [s["tasks"] for s in layers[0]] == [["a1", "a2", "b1", "b2"]]
    first, second = model.branches[1]
    assert first[0].weight is not second[0].weight
    torch.testing.assert_close(first[0].weight, second[0].weight)


def test_a_branch_reaches_only_its_own_tasks():
    model = _model()
    model.split(2, [[[0, 1], [2, 3]]])
    x = torch.randn(5, 6)
    before = model(x)
    with torch.no_grad():
        model.branches[2][1][0].weight.add_(1.0)  # the b1, b2 branch of the top layer
    after = model(x)
    for name in ("a1", "a2"):
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    for name in ("b1", "b2"):
        assert not torch.allclose(after[name], before[name])
    shared = {id(p) for p in model.shared_parameters()}
    assert id(model.branches[2][1][0].weight) in shared  # reached by b1 and b2
    assert id(model.heads["a1"][0].weight if isinstance(model.heads["a1"], torch.nn.Sequential)
              else model.heads["a1"].weight) not in shared


def test_two_groups_of_related_tasks_are_recovered_at_the_first_split(two_groups):
    trainer = _trainer(two_groups)
    trainer.fit(two_groups.train, two_groups.val)
    first = trainer.model.structure()["splits"][0]
    assert first["layer"] == 1 and first["groups"] == [["y1", "y2"], ["y3", "y4"]]
    affinity = torch.tensor(first["affinity"])
    assert min(affinity[0, 1], affinity[2, 3]) > affinity[:2, 2:].max()  # related pairs agree more often


def test_the_optimizer_holds_exactly_the_new_parameters_after_a_split(two_groups):
    trainer = _trainer(two_groups, epochs=1, split_every=1)
    old_top = list(trainer.model.branches[1][0].parameters())
    head = next(trainer.model.heads["y1"].parameters())
    trainer.fit(two_groups.train, two_groups.val)
    assert len(trainer.model.branches[1]) == 2
    in_optimizer = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in in_optimizer} == {id(p) for p in trainer.model.parameters()}
    assert len(in_optimizer) == len(list(trainer.model.parameters()))
    assert not any(p is q for p in old_top for q in in_optimizer)  # the split layer was replaced by copies
    steps = -(-len(two_groups.train) // 64)
    assert float(trainer.optimizer.state[head]["step"]) == steps  # a kept parameter keeps its Adam state
    assert all(p not in trainer.optimizer.state for p in trainer.model.branches[1].parameters())
    trainer.epochs = 2  # training goes on and moves the new branches
    before = [p.detach().clone() for p in trainer.model.branches[1].parameters()]
    trainer.fit(two_groups.train, two_groups.val)
    assert all(not torch.equal(b, p) for b, p in zip(before, trainer.model.branches[1].parameters()))


def test_resume_after_a_split_equals_an_uninterrupted_run(two_groups, tmp_path):
    whole = _trainer(two_groups, tmp_path / "whole", epochs=4, split_every=1)
    whole.fit(two_groups.train, two_groups.val)
    _trainer(two_groups, tmp_path / "cut", epochs=2, split_every=1).fit(two_groups.train, two_groups.val)
    resumed = _trainer(two_groups, tmp_path / "cut", epochs=4, split_every=1)
    assert resumed.resume()
    assert resumed.model.structure()["splits"] == json.loads((tmp_path / "cut" / "branching.json").read_text())["splits"]
    resumed.fit(two_groups.train, two_groups.val)
    assert resumed.model.structure() == whole.model.structure()
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_load_rebuilds_the_saved_tree_and_the_report_draws_it(tmp_path):
    config = parse_config({
        "data": {"dataset": "synthetic", "options": {"n": 600, "d": 10, "num_tasks": 4, "groups": 2,
                                                     "correlation": 0.9}},
        "model": {"architecture": "branching", "trunk": {"name": "mlp", "options": {"hidden": [16, 16]}},
                  "options": {"alpha": 0.0, "max_branches": 2, "split_every": 1}},
        "train": {"epochs": 2, "batch_size": 64}})
    run_training(config, tmp_path)
    model_dir = tmp_path / "branching+equal" / "seed0"
    saved = json.loads((model_dir / "branching.json").read_text())
    assert len(saved["layers"][-1]) == 2 and len(saved["splits"]) == 2
    predictor = taskloom.load(tmp_path, checkpoint="last")
    assert predictor.model.structure() == saved
    state = load_checkpoint(model_dir / "checkpoints" / "last.pt")
    assert decode_tree(state["model"]["_extra_state"]) == saved
    x = torch.randn(3, 10)
    fresh = build_branching(lambda: MLP(10, (16, 16)), [Task(f"y{k}", "regression") for k in range(1, 5)])
    fresh.load_state_dict(state["model"])
    with torch.no_grad():
        for name, value in fresh.eval()(x).items():
            torch.testing.assert_close(predictor.model.eval()(x)[name], value)
    report = (tmp_path / "report.html").read_text()
    assert "<svg" in report and "layer 1: y1,y2" in report


def test_branching_is_listed_and_its_options_are_checked(capsys):
    assert "branching" in ARCHITECTURES
    assert main(["list"]) == 0
    assert "branching" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"model\.options\.max_branch: unknown option"):
        parse_config({"model": {"architecture": "branching", "options": {"max_branch": 2}}})
    for options, field in (({"affinity": "cosine"}, "affinity"), ({"split_every": 0}, "split_every"),
                           ({"alpha": -1.0}, "alpha"), ({"max_branches": 0}, "max_branches")):
        with pytest.raises(ValueError, match=f"model.options.{field}"):
            _model(**options)


def test_a_split_without_validation_data_says_what_to_do():
    with pytest.raises(ValueError, match="val_fraction"):
        _model(split_every=1).restructure(1, None)


def test_a_tree_for_other_tasks_or_another_trunk_is_refused():
    model = _model()
    tree = model.structure()
    with pytest.raises(ValueError, match="must have 2 layers.*got 3"):
        _model(hidden=(8, 8)).set_structure(tree)
    tree["layers"][-1][0]["tasks"] = ["a1"]
    with pytest.raises(ValueError, match="serves tasks"):
        model.set_structure(tree)


@pytest.mark.parametrize("method", ["pcgrad", "mgda"])
def test_gradient_methods_train_every_parameter_after_a_split(two_groups, method):
    from taskloom.balancing import BALANCERS
    from taskloom.data.dataset import BatchLoader

    names = [t.name for t in two_groups.tasks]
    torch.manual_seed(0)
    model = build_branching(lambda: MLP(20, (16, 16)), two_groups.tasks, alpha=0.0, max_branches=2, split_every=1)
    trainer = Trainer(model, two_groups.tasks, BALANCERS.get(method)(names), epochs=1, batch_size=64, seed=0)
    trainer.fit(two_groups.train, two_groups.val)
    assert len(model.branches[1]) == 2
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train_step(next(iter(BatchLoader(two_groups.train, 64, seed=0))))
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_a_split_model_exports_to_onnx_equal_to_pytorch(tmp_path):
    pytest.importorskip("onnx")
    from taskloom.serve.export import export_onnx

    config = parse_config({
        "data": {"dataset": "synthetic", "options": {"n": 400, "d": 8, "num_tasks": 4, "groups": 2}},
        "model": {"architecture": "branching", "trunk": {"name": "mlp", "options": {"hidden": [8, 8]}},
                  "options": {"alpha": 0.0, "max_branches": 2, "split_every": 1}},
        "train": {"epochs": 1, "batch_size": 64}})
    run_training(config, tmp_path / "run")
    predictor = taskloom.load(tmp_path / "run", checkpoint="last")
    assert len(predictor.model.structure()["layers"][-1]) == 2
    assert export_onnx(predictor, tmp_path / "model.onnx", verify=True).is_file()  # verify: refused if it differs


def test_tag_affinity_of_two_identical_tasks_is_one():
    from taskloom.data.dataset import MultiTaskDataset
    from taskloom.sharing.branching import tag_affinity

    torch.manual_seed(0)
    tasks = [Task(name, "regression") for name in ("a", "b", "c")]
    model = build_branching(lambda: MLP(5, (8, 8)), tasks, affinity="tag")
    model.heads["b"].load_state_dict(model.heads["a"].state_dict())  # same head, same target: same loss
    x = torch.randn(64, 5)
    y = x[:, 0] * 2
    data = MultiTaskDataset(x, {"a": y, "b": y.clone(), "c": torch.randn(64)})
    affinity = tag_affinity(model, data, tasks, lr=0.01)
    assert affinity[0, 1].item() == pytest.approx(1.0, abs=1e-6)
    assert affinity.diagonal().tolist() == [1.0, 1.0, 1.0]
    assert bool((affinity.abs() <= 1).all()) and torch.equal(affinity, affinity.T)


def test_tag_affinity_drives_a_split_in_training(two_groups):
    torch.manual_seed(0)
    model = build_branching(lambda: MLP(20, (16, 16)), two_groups.tasks, alpha=0.0, max_branches=2, split_every=1,
                            affinity="tag")
    Trainer(model, two_groups.tasks, epochs=1, batch_size=64, seed=0).fit(two_groups.train, two_groups.val)
    (split,) = model.structure()["splits"]
    assert split["layer"] == 1 and len(split["groups"]) == 2
    assert sorted(n for g in split["groups"] for n in g) == ["y1", "y2", "y3", "y4"]


def test_max_parameters_caps_the_copies_a_split_may_create():
    affinity = torch.tensor([[1.0, 0.9, 0.3, 0.3], [0.9, 1.0, 0.3, 0.3], [0.3, 0.3, 1.0, 0.9], [0.3, 0.3, 0.9, 1.0]])
    from taskloom.sharing import count_parameters

    size = count_parameters(_model().branches[2][0])  # the top layer: 8 x 8 + 8
    total = count_parameters(_model())
    assert _model(alpha=0.0, max_parameters=total + size - 1).plan_split(2, affinity) == [[[0, 1, 2, 3]]]
    assert _model(alpha=0.0, max_parameters=total + size).plan_split(2, affinity) == [[[0, 1], [2, 3]]]
    assert _model(alpha=0.0, max_parameters=total + 3 * size).plan_split(2, affinity) == [[[0], [1], [2], [3]]]
