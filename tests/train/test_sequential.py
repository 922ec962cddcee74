"""Sequential multi-task learning (SeqMT, Pentina et al. 2015) against the closed form of its objective."""
import logging

import pytest
import torch
from torch import nn

from taskloom import MultiTaskDataset, MultiTaskModel, Task, Trainer
from taskloom.train.sequential import SequentialCurriculum, distance_penalty

N, D, STRENGTH = 64, 3, 0.5


def _linear_model(names, seed=0):
    """No trunk (identity), one bias-free linear head per task: task t's model is the vector w_t."""
    torch.manual_seed(seed)
    heads = {name: nn.Linear(D, 1, bias=False) for name in names}
    return MultiTaskModel(nn.Identity(), heads=heads)


def _inputs(seed=0):
    return torch.randn(N, D, generator=torch.Generator().manual_seed(seed))


def _closed_form(x, y, w_prev, strength):
    """argmin_w mean((x w - y)^2) + strength/2 ||w - w_prev||^2: (2 X'X/n + s I)^-1 (2 X'y/n + s w_prev)."""
    x, y, w_prev = x.double(), y.double(), w_prev.double()
    a = 2 * x.T @ x / len(x) + strength * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(a, 2 * x.T @ y / len(x) + strength * w_prev)


def _objective(x, y, w, w_prev, strength):
    x, y, w, w_prev = x.double(), y.double(), w.double(), w_prev.double()
    return float(((x @ w - y) ** 2).mean() + strength / 2 * ((w - w_prev) ** 2).sum())


def _trainer(model, tasks, curriculum, epochs_per_task, **kwargs):
    return Trainer(model, tasks, optimizer="sgd", lr=0.05, momentum=0.9, epochs=epochs_per_task, batch_size=N,
                   curriculum=curriculum, **kwargs)


def test_each_stage_reaches_the_closed_form_pulled_toward_the_previous_solution():
    x = _inputs()
    ya = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(N, generator=torch.Generator().manual_seed(1))
    yb = x @ torch.tensor([1.5, -1.0, 0.0]) + 0.1 * torch.randn(N, generator=torch.Generator().manual_seed(2))
    tasks = [Task("a", "regression"), Task("b", "regression")]
    model = _linear_model(["a", "b"])
    w0_b = model.heads["b"].weight.detach().reshape(-1).clone()
    curriculum = SequentialCurriculum(model, ["a", "b"], order=["b", "a"], strength=STRENGTH, epochs_per_task=300)
    trainer = _trainer(model, tasks, curriculum, 300)
    assert trainer.epochs == 600  # train.epochs per task
    history = trainer.fit(MultiTaskDataset(x, {"a": ya, "b": yb}))
    # stage 1, task b: from its initialization, pulled toward it
    w_b = _closed_form(x, yb, w0_b, STRENGTH)
    # stage 2, task a: starts from b's solution (same head shape) and is pulled toward it
    w_a = _closed_form(x, ya, w_b, STRENGTH)
    assert torch.allclose(model.heads["b"].weight.detach().reshape(-1).double(), w_b, atol=1e-4)
    assert torch.allclose(model.heads["a"].weight.detach().reshape(-1).double(), w_a, atol=1e-4)
    assert not torch.allclose(w_a, _closed_form(x, ya, torch.zeros(D), STRENGTH), atol=1e-2)  # the pull matters
    stages = [(r["curriculum"]["stage"], r["curriculum"]["task"]) for r in history.records]
    assert stages == [(0, "b")] * 300 + [(1, "a")] * 300
    assert sorted(history.records[0]["train_loss"]) == ["b"] and sorted(history.records[-1]["train_loss"]) == ["a"]


def test_heads_of_tasks_not_yet_trained_stay_as_initialized():
    x = _inputs()
    targets = {"a": x[:, 0], "b": x[:, 1], "c": torch.stack([x[:, 2], -x[:, 2]], 1)}
    tasks = [Task("a", "regression"), Task("b", "regression"), Task("c", "regression", num_outputs=2)]
    torch.manual_seed(0)
    model = MultiTaskModel(nn.Linear(D, 4), tasks=tasks, out_features=4)
    initial = {name: [p.detach().clone() for p in model.heads[name].parameters()] for name in ("b", "c")}
    after_first = {}

    def snapshot(record):
        if record["epoch"] == 2:
            after_first.update({n: [p.detach().clone() for p in model.heads[n].parameters()] for n in ("b", "c")})

    curriculum = SequentialCurriculum(model, ["a", "b", "c"], order=["a", "b", "c"], strength=0.1,
                                      epochs_per_task=2)
    _trainer(model, tasks, curriculum, 2, on_epoch_end=snapshot).fit(MultiTaskDataset(x, targets))
    for name in ("b", "c"):
        assert all(torch.equal(p, q) for p, q in zip(after_first[name], initial[name]))
    # the final model holds every head, each trained in its stage (c's 2-output head could not start from b's)
    for name in ("b", "c"):
        assert not all(torch.equal(p, q) for p, q in zip(model.heads[name].parameters(), initial[name]))


def test_order_auto_picks_the_task_closest_to_the_current_solution(caplog):
    x = _inputs()
    model = _linear_model(["far", "near"])
    w_near = model.heads["near"].weight.detach().reshape(-1).clone()
    w_far = model.heads["far"].weight.detach().reshape(-1).clone()
    # near: its initial head already solves it (loss 0, distance 0); far: 3 away from its initial head
    targets = {"near": x @ w_near, "far": x @ (w_far + 3.0)}
    tasks = [Task("far", "regression"), Task("near", "regression")]
    curriculum = SequentialCurriculum(model, ["far", "near"], order="auto", strength=STRENGTH, epochs_per_task=5,
                                      auto_steps=300)
    trainer = _trainer(model, tasks, curriculum, 5)
    with caplog.at_level(logging.INFO, logger="taskloom.train.sequential"):
        history = trainer.fit(MultiTaskDataset(x, targets))
    assert curriculum.order == ["near", "far"]
    assert "order auto picks near" in caplog.text
    criteria = history.records[0]["curriculum"]["criteria"][0]
    # after a converged fit, each criterion is the minimum of the stage objective (closed form)
    for name, w0, y in (("near", w_near, targets["near"]), ("far", w_far, targets["far"])):
        best = _closed_form(x, y, w0, STRENGTH)
        assert criteria[name] == pytest.approx(_objective(x, y, best, w0, STRENGTH), rel=1e-3, abs=1e-6)
    assert criteria["near"] == pytest.approx(0.0, abs=1e-6)


def test_the_penalty_is_half_strength_times_the_squared_distance():
    model = _linear_model(["a", "b"])
    curriculum = SequentialCurriculum(model, ["a", "b"], order=["a", "b"], strength=3.0)
    curriculum.stage = 0
    curriculum.anchors = [p.detach().clone() for p in curriculum.parameters()]
    with torch.no_grad():
        model.heads["a"].weight.add_(torch.tensor([[1.0, 2.0, -2.0]]))
        model.heads["b"].weight.add_(10.0)  # not task a's model: no pull on it
    assert float(curriculum.penalty().detach()) == pytest.approx(1.5 * (1 + 4 + 4))
    assert float(distance_penalty([torch.ones(2)], [torch.zeros(2)], 2.0)) == pytest.approx(2.0)


def test_a_checkpoint_keeps_the_stage_and_loads_with_weights_only(tmp_path):
    x = _inputs()
    tasks = [Task("a", "regression"), Task("b", "regression")]
    data = MultiTaskDataset(x, {"a": x[:, 0], "b": x[:, 1]})

    def build(run_dir):
        model = _linear_model(["a", "b"])
        curriculum = SequentialCurriculum(model, ["a", "b"], order="auto", strength=STRENGTH, epochs_per_task=2,
                                          auto_steps=3)
        return _trainer(model, tasks, curriculum, 2, run_dir=run_dir), curriculum

    trainer, curriculum = build(tmp_path)
    trainer.epochs = 3  # stop in the middle of stage 2
    trainer.fit(data)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["curriculum"]["order"] == curriculum.order and state["curriculum"]["stage"] == 1
    resumed, again = build(tmp_path)
    assert resumed.resume()
    assert again.order == curriculum.order and again.stage == 1
    assert all(torch.equal(a, b) for a, b in zip(again.anchors, curriculum.anchors))
    resumed.fit(data)
    (tmp_path / "whole").mkdir()
    whole, _ = build(tmp_path / "whole")
    whole.fit(data)  # the same run without the interruption
    assert [r["epoch"] for r in resumed.history.records] == [1, 2, 3, 4]
    for a, b in zip(resumed.model.parameters(), whole.model.parameters()):
        assert torch.equal(a, b)
