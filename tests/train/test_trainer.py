"""The trainer: missing labels, resume, checkpoints, selection, early stopping, per-task logs."""
import json

import pytest
import torch

from taskloom import MultiTaskModel
from taskloom.balancing import StaticWeighting
from taskloom.data.dataset import BatchLoader
from taskloom.train.checkpoint import load_checkpoint
from taskloom.train.trainer import Trainer
from taskloom.trunks import MLP

from synthetic_tasks import make_three_task_data


def _trainer(tasks, run_dir=None, epochs=4, seed=0, **options):
    torch.manual_seed(seed)
    model = MultiTaskModel(MLP(8, (32, 32), dropout=0.2), tasks=tasks)
    settings = dict(epochs=epochs, batch_size=32, seed=seed, run_dir=run_dir, schedule="cosine", lr=3e-3)
    return Trainer(model, tasks, **{**settings, **options})


def test_training_with_half_of_one_tasks_labels_missing_still_learns_it():
    data, tasks = make_three_task_data(n=600, missing=0.5)
    assert 0.4 < data.labelled("sign") / len(data) < 0.6
    trainer = _trainer(tasks, epochs=15)
    before = trainer.evaluate(data.subset(range(500, 600)))["sign"]["accuracy"]
    trainer.fit(data.subset(range(500)), data.subset(range(500, 600)))
    after = trainer.evaluate(data.subset(range(500, 600)))
    assert after["sign"]["accuracy"] > max(0.75, before + 0.2)
    assert after["sign"]["labelled"] == data.subset(range(500, 600)).labelled("sign")
    losses = [r["train_loss"]["sign"] for r in trainer.history.records]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path):
    data, tasks = make_three_task_data(n=300)
    train, val = data.subset(range(240)), data.subset(range(240, 300))
    straight = _trainer(tasks, tmp_path / "straight", epochs=4)
    straight.fit(train, val)
    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    first = _trainer(tasks, tmp_path / "resumed", epochs=4, on_epoch_end=interrupt)
    with pytest.raises(KeyboardInterrupt):
        first.fit(train, val)
    second = _trainer(tasks, tmp_path / "resumed", epochs=4, seed=0)
    torch.manual_seed(123)  # a different global RNG state before resuming must not matter
    assert second.resume() and second.start_epoch == 3
    second.fit(train, val)
    assert second.history.records[-1]["val"] == straight.history.records[-1]["val"]
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_checkpoints_are_atomic_weights_only_and_complete(tmp_path):
    data, tasks = make_three_task_data(n=200)
    trainer = _trainer(tasks, tmp_path, epochs=2)
    trainer.fit(data.subset(range(160)), data.subset(range(160, 200)))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best-level.pt", "best-quadrant.pt", "best-sign.pt", "best.pt", "last.pt"]
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")  # weights_only=True inside
    assert {"model", "optimizer", "scheduler", "balancer", "rng", "next_epoch", "history"} <= set(state)
    assert state["next_epoch"] == 3
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_early_stopping_and_task_selection(tmp_path):
    data, tasks = make_three_task_data(n=200)
    trainer = _trainer(tasks, tmp_path, epochs=30, patience=2, lr=1e-12)
    trainer.fit(data.subset(range(160)), data.subset(range(160, 200)))
    assert len(trainer.history.records) == 3  # the first epoch sets the best; two more without improvement
    assert trainer.finished


def test_metrics_and_losses_are_logged_under_task_names(tmp_path):
    data, tasks = make_three_task_data(n=200)
    trainer = _trainer(tasks, tmp_path, epochs=1, balancer=StaticWeighting(["sign", "quadrant", "level"],
                                                                           {"sign": 2, "quadrant": 1, "level": 0.5}))
    trainer.fit(data.subset(range(160)), data.subset(range(160, 200)))
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert set(record["train_loss"]) == set(record["val"]) == {"sign", "quadrant", "level"}
    assert record["weights"] == {"sign": 2.0, "quadrant": 1.0, "level": 0.5}
    assert set(record["val"]["level"]) == {"mse", "mae", "r2"}


def test_a_task_with_no_labels_in_a_split_is_reported_as_such():
    data, tasks = make_three_task_data(n=100)
    data.masks["sign"][:] = False  # changed after construction: evaluation must still see it
    results = _trainer(tasks, epochs=1).evaluate(data)
    assert results["sign"] == {"labelled": 0, "note": "no labelled rows in this split"}
    assert results["level"]["labelled"] == 100


def test_one_step_changes_every_parameter():
    data, tasks = make_three_task_data(n=64)
    trainer = _trainer(tasks)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step(data.batch(torch.arange(64)))
    assert all(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))


def test_predict_returns_every_task_from_one_forward():
    data, tasks = make_three_task_data(n=16)
    predictions = _trainer(tasks).predict(data.inputs)
    assert set(predictions) == {"sign", "quadrant", "level"}
    assert predictions["quadrant"].shape == (16,) and predictions["quadrant"].max() < 4


def test_a_checkpoint_loads_into_a_model_of_the_same_tasks_in_another_order(tmp_path):
    data, tasks = make_three_task_data(n=64)
    first = _trainer(tasks, tmp_path, epochs=1)
    first.fit(data)
    reordered = [tasks[2], tasks[0], tasks[1]]
    second = _trainer(reordered, seed=1)
    second.load(tmp_path / "checkpoints" / "last.pt", restore_training=False)
    for name, output in first.predict(data.inputs).items():
        assert torch.equal(second.predict(data.inputs)[name], output)
    with pytest.raises(ValueError, match=r"continuing its training needs that order"):
        second.load(tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(ValueError, match=r"is for tasks \['sign', 'quadrant', 'level'\], not \['sign', 'quadrant'\]"):
        _trainer(tasks[:2]).load(tmp_path / "checkpoints" / "last.pt", restore_training=False)


def test_the_step_forward_follows_what_the_balancer_declares(caplog):
    from taskloom.balancing import EqualWeighting, build_balancer

    data, tasks = make_three_task_data(n=64)
    names = [t.name for t in tasks]
    batch = next(iter(BatchLoader(data, 32)))

    class Declares(EqualWeighting):  # loss-level, yet with an outputs method: the declaration decides
        def outputs(self, model, inputs):
            raise AssertionError("a loss-level balancer's outputs must not be used")

    _trainer(tasks, balancer=Declares(names)).train_step(batch)
    calls = []
    gradient = build_balancer("pcgrad", names)
    original = gradient.outputs
    gradient.outputs = lambda model, inputs: calls.append(1) or original(model, inputs)
    _trainer(tasks, balancer=gradient).train_step(batch)
    assert calls == [1]  # parameter mode without compile: the representation fast path
    compiled = _trainer(tasks, balancer=build_balancer("pcgrad", names), compile=True)
    assert compiled.step_forward is compiled.forward  # parameter mode with compile: the compiled model
    with caplog.at_level("WARNING"):
        kept = _trainer(tasks, balancer=build_balancer("pcgrad", names, mode="representation"), compile=True)
    assert kept.step_forward is not kept.forward and "torch.compile is not applied" in caplog.text


def test_a_trainer_from_a_config_takes_every_section_and_refuses_unknown_names():
    from taskloom.config import parse_config

    config = parse_config({"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.5, "weight_decay": 0.01},
                           "schedule": {"name": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 1},
                           "train": {"epochs": 3, "batch_size": 16, "seed": 4, "patience": 2, "amp": "bf16"}})
    data, tasks = make_three_task_data(n=32)
    trainer = Trainer.from_config(config, MultiTaskModel(MLP(8, (8,)), tasks=tasks), tasks)
    group = trainer.optimizer.param_groups[0]
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.5, 0.01)
    assert trainer.schedule_spec == {"name": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 1}
    assert (trainer.epochs, trainer.batch_size, trainer.seed, trainer.patience, trainer.amp) == (3, 16, 4, 2, "bf16")
    with pytest.raises(ValueError, match="schedule.name must be one of none, cosine, step; got 'linear'"):
        _trainer(tasks, schedule="linear")  # refused at construction, not at the first fit
    with pytest.raises(ValueError, match="optimizer.name must be one of adamw, sgd"):
        _trainer(tasks, optimizer="adam")
