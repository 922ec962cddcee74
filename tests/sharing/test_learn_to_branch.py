"""Learning to branch (Guo, Lee & Ulbricht 2020): parent distributions, Gumbel-softmax samples, the hard sample's
single parent, the argmax tree after finalize, logits learning the better parent, save/load/resume."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import taskloom
from taskloom.cli import main
from taskloom.config import ConfigError, parse_config
from taskloom.data.datasets.synthetic import load_synthetic
from taskloom.sharing import ARCHITECTURES
from taskloom.sharing.branching import decode_tree
from taskloom.sharing.learn_to_branch import LearnToBranch, build_learn_to_branch, gumbel_noise, relaxed_sample
from taskloom.task import Task
from taskloom.train.checkpoint import load_checkpoint
from taskloom.train.runner import run_training
from taskloom.train.trainer import Trainer
from taskloom.trunks import MLP

TASKS = [Task("a", "regression"), Task("b", "regression")]


def _tiny(hard: bool = False, **options) -> LearnToBranch:
    """Two layers of two candidate blocks on 2 inputs; layer 0 node i is (i+1) I, layer 1 node j is (j+1) I,
    every head reads x0 + 2 x1: the path i -> j gives (i+1)(j+1)(x0 + 2 x1) on positive inputs."""
    torch.manual_seed(0)
    model = build_learn_to_branch(lambda: MLP(2, (2, 2)), TASKS, branches=[2, 2], hard=hard, **options)
    with torch.no_grad():
        for d in range(2):
            for k, node in enumerate(model.nodes[d]):
                node[0].weight.copy_((k + 1) * torch.eye(2))
                node[0].bias.zero_()
        for head in model.heads.values():
            head.weight.copy_(torch.tensor([[1.0, 2.0]]))
            head.bias.zero_()
    return model


def _positive(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 2, generator=torch.Generator().manual_seed(3)) + 0.1


def test_every_parent_distribution_and_every_soft_sample_sums_to_one():
    model = _tiny()
    with torch.no_grad():
        for logit in model.logits.values():
            logit.copy_(torch.randn(logit.shape, generator=torch.Generator().manual_seed(1)) * 3)
    for key, p in model.probabilities().items():
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[0]), msg=key)
        assert bool((p > 0).all())
    model.train()(_positive())
    for key, w in model.last_sample.items():
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[0]), msg=key)


def test_with_a_hard_sample_each_child_reads_exactly_one_parent():
    model = _tiny(hard=True).train()
    x = _positive()
    for _ in range(4):  # several draws from the model's generator
        out = model(x)
        layer1, heads = model.last_sample["layer1"], model.last_sample["heads"]
        for w in (layer1, heads):
            assert set(w.flatten().tolist()) <= {0.0, 1.0} and torch.equal(w.sum(-1), torch.ones(2))
        for k, name in enumerate(["a", "b"]):
            j = int(heads[k].argmax())
            i = int(layer1[j].argmax())
            expected = (i + 1) * (j + 1) * (x[:, 0] + 2 * x[:, 1])
            torch.testing.assert_close(out[name].squeeze(1), expected)


def test_as_temperature_goes_to_zero_a_soft_sample_concentrates_on_the_argmax():
    logits = torch.tensor([[0.3, 1.2, -0.5], [2.0, 0.0, 1.9]])
    zero = torch.zeros_like(logits)
    sharp = relaxed_sample(logits, zero, temperature=1e-3)
    torch.testing.assert_close(sharp, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    gaps = [relaxed_sample(logits, zero, t).max(-1).values.min().item() for t in (10.0, 1.0, 0.1)]
    assert gaps[0] < gaps[1] < gaps[2]  # the largest weight grows as the temperature falls
    noise = gumbel_noise(logits.shape, torch.Generator().manual_seed(0))
    perturbed = (logits + noise).argmax(-1)
    torch.testing.assert_close(relaxed_sample(logits, noise, 1e-4),
                               nn.functional.one_hot(perturbed, 3).float())


def test_gumbel_max_draws_follow_the_parent_distribution():
    logits = torch.tensor([0.5, -1.0, 1.5])
    noise = gumbel_noise((20000, 3), torch.Generator().manual_seed(0))
    counts = torch.bincount((logits + noise).argmax(-1), minlength=3).double() / 20000
    torch.testing.assert_close(counts, torch.softmax(logits.double(), 0), atol=0.015, rtol=0)


def test_finalize_gives_the_hand_built_tree_of_argmax_parents():
    model = _tiny()
    with torch.no_grad():
        model.logits["layer1"].copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))  # node 0 <- 1, node 1 <- 0
        model.logits["heads"].copy_(torch.tensor([[0.0, 3.0], [0.1, 2.0]]))  # a -> 1, b -> 1
    x = _positive()
    evaluated = model.eval()(x)
    layer0, layer1 = model.nodes[0][0], model.nodes[1][1]
    tree = model.finalize()
    assert tree["layers"] == [[{"node": 0, "parent": 0, "tasks": ["a", "b"]}],
                              [{"node": 1, "parent": 0, "tasks": ["a", "b"]}]]
    assert tree["heads"] == {"a": 0, "b": 0}
    assert len(model.logits) == 0 and [len(layer) for layer in model.nodes] == [1, 1]
    by_hand = {name: model.heads[name](layer1(layer0(x))) for name in ("a", "b")}
    out = model(x)
    for name in ("a", "b"):
        torch.testing.assert_close(out[name], by_hand[name])
        torch.testing.assert_close(out[name], evaluated[name])
        torch.testing.assert_close(out[name].squeeze(1), 2 * (x[:, 0] + 2 * x[:, 1]))
    assert model.shared_parameters() == list(layer0.parameters()) + list(layer1.parameters())


def test_the_branching_logits_learn_the_parent_that_lowers_each_tasks_loss():
    """Node 0 passes (x0, x1), node 1 swaps them; both heads read the first feature. Task a's target is x0 (node 0
    is right for it), task b's is x1 (node 1): the head logits must move apart toward those parents."""
    torch.manual_seed(0)
    model = build_learn_to_branch(lambda: MLP(2, (2,)), TASKS, branches=2, temperature=1.0, min_temperature=1.0)
    with torch.no_grad():
        model.nodes[0][0][0].weight.copy_(torch.eye(2))
        model.nodes[0][1][0].weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        for k in range(2):
            model.nodes[0][k][0].bias.zero_()
        for head in model.heads.values():
            head.weight.copy_(torch.tensor([[1.0, 0.0]]))
            head.bias.zero_()
    x = torch.rand(64, 2, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD([model.logits["heads"]], lr=2.0)
    model.train()
    for step in range(60):
        out = model(x)
        loss = ((out["a"].squeeze(1) - x[:, 0]) ** 2).mean() + ((out["b"].squeeze(1) - x[:, 1]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            grad = model.logits["heads"].grad
            assert grad[0, 0] < 0 < grad[0, 1] and grad[1, 1] < 0 < grad[1, 0]
        optimizer.step()
    p = model.probabilities()["heads"]
    assert p[0, 0] > 0.9 and p[1, 1] > 0.9
    assert model.discrete_tree()["heads"] == {"a": 0, "b": 1}


def test_one_step_changes_every_parameter_before_and_after_finalize():
    from sharing._helpers import batch, mlp, tasks, total_loss

    torch.manual_seed(0)
    model = build_learn_to_branch(mlp, tasks(), branches=[2, 3])
    for finalize in (False, True):
        if finalize:
            model.finalize()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        total_loss(model.train(), batch()).backward()
        optimizer.step()
        assert [n for n, p in model.named_parameters() if torch.equal(p, before[n])] == []


def test_the_temperature_anneals_per_epoch_and_search_epochs_fixes_the_tree():
    model = _tiny(temperature=4.0, decay=0.5, min_temperature=0.75, search_epochs=3)
    assert model.temperature() == 4.0
    assert model.restructure(1) is False and model.temperature() == 2.0
    assert model.restructure(2) is False and model.temperature() == 1.0
    assert model.restructure(3) is True and model.temperature() == 0.75 and model.structure()["fixed_after"] == 3
    assert model.restructure(4) is False


@pytest.fixture(scope="module")
def two_groups():
    return load_synthetic(n=600, d=10, num_tasks=4, groups=2, correlation=0.9, seed=0)


def _trainer(splits, run_dir, epochs):
    torch.manual_seed(0)
    model = build_learn_to_branch(lambda: MLP(10, (8, 8)), splits.tasks, search_epochs=2, seed=5)
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(model, splits.tasks, epochs=epochs, batch_size=64, seed=0, lr=3e-3, run_dir=run_dir)


def test_resume_equals_an_uninterrupted_run_and_the_tree_is_saved_as_plain_data(two_groups, tmp_path):
    whole = _trainer(two_groups, tmp_path / "whole", epochs=3)
    whole.fit(two_groups.train, two_groups.val)
    _trainer(two_groups, tmp_path / "cut", epochs=1).fit(two_groups.train, two_groups.val)
    resumed = _trainer(two_groups, tmp_path / "cut", epochs=3)
    assert resumed.resume() and resumed.model.final is None and resumed.model.epochs_done == 1
    resumed.fit(two_groups.train, two_groups.val)
    assert resumed.model.structure() == whole.model.structure()
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    saved = json.loads((tmp_path / "whole" / "learn_to_branch.json").read_text())
    assert saved["final"] is True and saved == whole.model.structure()
    state = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    assert decode_tree(state["model"]["_extra_state"])["final"]["layers"] == saved["layers"]
    torch.manual_seed(1)
    fresh = build_learn_to_branch(lambda: MLP(10, (8, 8)), two_groups.tasks, search_epochs=2)
    fresh.load_state_dict(state["model"])
    x = two_groups.test.inputs[:7]
    with torch.no_grad():
        expected = whole.model.eval()(x)
        for name, value in fresh.eval()(x).items():
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0)


def test_a_run_loads_with_its_final_tree(tmp_path):
    config = parse_config({
        "data": {"dataset": "synthetic", "options": {"n": 300, "d": 6, "num_tasks": 3}},
        "model": {"architecture": "learn_to_branch", "trunk": {"name": "mlp", "options": {"hidden": [8, 8]}},
                  "options": {"branches": [2, 3], "search_epochs": 1, "hard": True}},
        "train": {"epochs": 2, "batch_size": 64}})
    run_training(config, tmp_path)
    model_dir = tmp_path / "learn_to_branch+equal" / "seed0"
    saved = json.loads((model_dir / "learn_to_branch.json").read_text())
    predictor = taskloom.load(tmp_path, checkpoint="last")
    assert predictor.model.final is not None and predictor.model.structure() == saved
    state = load_checkpoint(model_dir / "checkpoints" / "last.pt")
    assert decode_tree(state["model"]["_extra_state"])["final"]["heads"] == saved["heads"]
    report = (tmp_path / "report.html").read_text()
    assert "Learned branching tree" in report and "fixed after epoch 1" in report and "<svg" in report


def test_it_is_listed_and_its_options_are_checked(capsys):
    assert "learn_to_branch" in ARCHITECTURES
    assert main(["list"]) == 0
    assert "learn_to_branch" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"model\.options\.branch: unknown option"):
        parse_config({"model": {"architecture": "learn_to_branch", "options": {"branch": 2}}})
    for options, field in (({"branches": [2]}, "branches"), ({"branches": 0}, "branches"),
                           ({"temperature": 0.0}, "temperature"), ({"decay": 1.5}, "decay"),
                           ({"min_temperature": 9.0}, "min_temperature"), ({"hard": "yes"}, "hard"),
                           ({"search_epochs": 0}, "search_epochs"), ({"seed": 1.5}, "seed")):
        with pytest.raises(ValueError, match=f"model.options.{field}"):
            build_learn_to_branch(lambda: MLP(2, (2, 2)), TASKS, **options)


def test_a_tree_for_another_trunk_or_other_tasks_is_refused():
    tree = _tiny().finalize()
    with pytest.raises(ValueError, match="must have 3 layers"):
        build_learn_to_branch(lambda: MLP(2, (2, 2, 2)), TASKS)._apply_final(tree)
    with pytest.raises(ValueError, match="serves tasks"):
        build_learn_to_branch(lambda: MLP(2, (2, 2)), [Task("c", "regression")])._apply_final(tree)


def test_the_gumbel_draws_follow_the_seed():
    def draws(global_seed, seed=None):
        torch.manual_seed(global_seed)
        model = build_learn_to_branch(lambda: MLP(2, (2, 2)), TASKS, branches=[2, 2], seed=seed).train()
        samples = []
        for _ in range(3):
            model(_positive())
            samples.append(model.last_sample["heads"])
        return torch.stack(samples)

    assert torch.equal(draws(0), draws(0))
    assert not torch.equal(draws(0), draws(1))  # by default the train seed (torch's global generator) decides
    assert torch.equal(draws(0, seed=7), draws(1, seed=7))


def test_a_learned_tree_exports_to_onnx_equal_to_pytorch(tmp_path):
    pytest.importorskip("onnx")
    from taskloom.serve.export import export_onnx

    config = parse_config({
        "data": {"dataset": "synthetic", "options": {"n": 300, "d": 6, "num_tasks": 3}},
        "model": {"architecture": "learn_to_branch", "trunk": {"name": "mlp", "options": {"hidden": [8, 8]}},
                  "options": {"branches": [2, 3], "search_epochs": 1}},
        "train": {"epochs": 1, "batch_size": 64}})
    run_training(config, tmp_path / "run")
    predictor = taskloom.load(tmp_path / "run", checkpoint="last")
    assert predictor.model.final is not None
    assert export_onnx(predictor, tmp_path / "model.onnx", verify=True).is_file()  # verify: refused if it differs


def test_a_state_saved_while_searching_loads_into_a_model_whose_tree_is_fixed():
    """The grid reloads best.pt into the trained model: a best epoch before search_epochs must load back."""
    model = _tiny()
    with torch.no_grad():
        model.logits["layer1"].copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
        model.logits["heads"].copy_(torch.tensor([[0.0, 3.0], [2.0, 0.1]]))
    searching = {k: v.clone() for k, v in model.state_dict().items()}
    x = _positive()
    expected = model.eval()(x)
    model.finalize()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.load_state_dict(searching)
    assert model.final is None and len(model.logits) == 2 and [len(layer) for layer in model.nodes] == [2, 2]
    for name, value in model.eval()(x).items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
