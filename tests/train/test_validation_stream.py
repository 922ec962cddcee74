"""Validation batches for balancers that learn from them (Auto-Lambda), as the trainer gives them."""
from __future__ import annotations

import contextlib

import pytest
import torch

from taskloom import MultiTaskModel
from taskloom.balancing import build_balancer
from taskloom.train.trainer import Trainer
from taskloom.train.validation_stream import validation_losses
from taskloom.trunks import MLP

from synthetic_tasks import make_three_task_data


class Recorder(torch.nn.Module):
    """Predicts zeros for every task and remembers the inputs it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x)
        n = x.shape[0]
        return {"sign": torch.zeros(n), "quadrant": torch.zeros(n, 4), "level": torch.zeros(n)}


def test_the_stream_cycles_over_exactly_the_validation_rows():
    data, tasks = make_three_task_data(n=10)
    losses = validation_losses(data, {t.name: t for t in tasks}, batch_size=4, seed=0, device=torch.device("cpu"),
                               autocast=contextlib.nullcontext, method="AutoLambda")
    model = Recorder()
    first = [losses(model) for _ in range(3)]  # one pass: batches of 4, 4 and 2 rows
    assert all(set(step) == {"sign", "quadrant", "level"} for step in first)
    seen = torch.cat(model.seen)
    assert sorted(seen[:, 0].tolist()) == sorted(data.inputs[:, 0].tolist())
    losses(model)  # the next pass starts again
    assert model.seen[-1].shape[0] == 4


def _trainer(tasks, **options):
    torch.manual_seed(0)
    model = MultiTaskModel(MLP(8, (16,)), tasks=tasks)
    balancer = build_balancer("autolambda", [t.name for t in tasks], **options)
    return Trainer(model, tasks, balancer=balancer, epochs=1, batch_size=50, lr=1e-2)


def test_a_trainer_gives_autolambda_validation_batches_and_its_weights_move():
    data, tasks = make_three_task_data(n=300)
    trainer = _trainer(tasks, primary=["level"], lr=0.05)
    trainer.fit(data.subset(range(200)), data.subset(range(200, 300)))
    weights = trainer.balancer.weights
    assert bool(torch.isfinite(weights).all()) and not torch.equal(weights, torch.ones(3))


def test_fit_without_a_validation_split_is_refused_naming_it():
    data, tasks = make_three_task_data(n=100)
    with pytest.raises(ValueError, match="AutoLambda.*validation split"):
        _trainer(tasks).fit(data)


def test_the_stream_skips_the_batches_a_resumed_run_already_drew():
    data, tasks = make_three_task_data(n=10)
    make = lambda start: validation_losses(data, {t.name: t for t in tasks}, batch_size=4, seed=0,  # noqa: E731
                                           device=torch.device("cpu"), autocast=contextlib.nullcontext,
                                           method="AutoLambda", start=start)
    straight, resumed = Recorder(), Recorder()
    losses = make(0)
    for _ in range(6):  # two passes of 4, 4 and 2 rows
        losses(straight)
    losses = make(4)  # the second pass, after its first batch
    for _ in range(2):
        losses(resumed)
    assert all(torch.equal(a, b) for a, b in zip(straight.seen[4:], resumed.seen))


def test_a_resumed_autolambda_run_ends_exactly_like_an_uninterrupted_one(tmp_path):
    data, tasks = make_three_task_data(n=200)
    train, val = data.subset(range(150)), data.subset(range(150, 200))

    def trainer(run_dir, **options):
        torch.manual_seed(0)
        model = MultiTaskModel(MLP(8, (16,)), tasks=tasks)
        balancer = build_balancer("autolambda", [t.name for t in tasks], primary=["level"], lr=0.05)
        return Trainer(model, tasks, balancer=balancer, epochs=2, batch_size=40, lr=1e-2, run_dir=run_dir, **options)

    straight = trainer(tmp_path / "straight")
    straight.fit(train, val)

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "resumed", on_epoch_end=interrupt).fit(train, val)
    second = trainer(tmp_path / "resumed")
    assert second.resume() and second.start_epoch == 2
    second.fit(train, val)
    assert torch.equal(second.balancer.weights, straight.balancer.weights)
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
