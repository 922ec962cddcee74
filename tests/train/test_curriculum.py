"""Task curricula, order and sampling modes (Pentina et al. 2015): masking, joining, schedules, config."""
import json
import logging

import pytest
import torch

from taskloom import MultiTaskDataset, MultiTaskModel, Task, Trainer
from taskloom.config import ConfigError, parse_config
from taskloom.data.batch import Batch
from taskloom.losses import task_losses
from taskloom.train.curriculum import OrderCurriculum, SamplingCurriculum, build_curriculum, mask_tasks

TASKS = [{"name": "a", "kind": "regression", "target": "y1"}, {"name": "b", "kind": "regression", "target": "y2"}]


def _data(n: int = 96, seed: int = 0) -> tuple[MultiTaskDataset, list[Task]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    targets = {"a": x[:, 0] - x[:, 1], "b": 2 * x[:, 2], "c": x.sum(1)}
    return MultiTaskDataset(x, targets), [Task("a", "regression"), Task("b", "regression"), Task("c", "regression")]


def _model(tasks: list[Task]) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh()), tasks=tasks, out_features=8)


def _config(curriculum: dict, epochs: int = 4, tasks=TASKS):
    return parse_config({"data": {"dataset": "synthetic", "options": {"n": 200, "d": 4}}, "tasks": tasks,
                         "train": {"epochs": epochs}, "curriculum": curriculum})


# -- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("curriculum, path", [
    ({"mode": "order", "order": ["a", "zz"]}, "curriculum.order[1]"),
    ({"mode": "sampling", "probabilities": {"a": 0.5, "zz": 0.5}}, "curriculum.probabilities.zz"),
    ({"mode": "sampling", "schedule": {"zz": [0.1, 1.0]}}, "curriculum.schedule.zz"),
    ({"mode": "sequential", "order": ["b", "zz"]}, "curriculum.order[1]"),
    ({"mode": "sequential", "order": ["b"]}, "curriculum.order"),
    ({"mode": "sampling", "probabilities": {"a": 0.5}, "every": 2}, "curriculum.every"),
    ({"mode": "order", "order": ["a", "b"], "every": 4}, "curriculum.every"),
    ({"mode": "order", "order": "auto"}, "curriculum.order"),
    ({"mode": "sampling", "schedule": {"a": [0.0, 0.0]}}, "curriculum.schedule.a"),
    ({"mode": "sampling", "probabilities": {"a": 1.5}}, "curriculum.probabilities.a"),
    ({"mode": "sampling"}, "curriculum.probabilities"),
    ({"mode": "order", "order": ["a"], "typo": 1}, "curriculum.typo"),
])
def test_bad_curricula_are_refused_with_the_field_path(curriculum, path):
    with pytest.raises(ConfigError) as error:
        _config(curriculum)
    assert f"  {path}:" in str(error.value)


def test_task_names_from_the_data_set_are_checked_when_the_curriculum_is_built():
    config = parse_config({"data": {"dataset": "synthetic", "options": {"n": 200, "d": 4}},
                           "curriculum": {"mode": "order", "order": ["y2", "y9"]}})
    with pytest.raises(ConfigError, match=r"curriculum.order\[1\]: 'y9' is not a task name"):
        build_curriculum(config, ["y1", "y2"], epochs=4)
    good = config.model_copy(update={"curriculum": config.curriculum.model_copy(update={"order": ["y2", "y1"]})})
    assert build_curriculum(good, ["y1", "y2"], epochs=4).join_epoch == {"y1": 2, "y2": 1}


def test_a_valid_curriculum_survives_the_run_directory_round_trip():
    from taskloom.config import dump_config
    import yaml

    config = _config({"mode": "order", "order": ["b", "a"], "every": 2})
    again = parse_config(yaml.safe_load(dump_config(config)))
    assert again.curriculum == config.curriculum and again.curriculum.every == 2


# -- masking ----------------------------------------------------------------------------------------
def test_a_masked_task_adds_no_loss_and_no_gradient():
    _, tasks = _data()
    model = _model(tasks)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    batch = Batch(x, {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]})
    masked = mask_tasks(batch, ["b"])
    losses = task_losses(model(masked.inputs), masked, tasks)
    assert set(losses) == {"a", "c"}
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.heads["b"].parameters())
    assert all(p.grad is not None for p in model.heads["a"].parameters())
    assert not masked.masks["b"].any() and "b" not in batch.masks  # the original batch is untouched
    micro = mask_tasks([batch, batch], ["a"])
    assert all(not m.masks["a"].any() for m in micro)


# -- order ---------------------------------------------------------------------------------------------
def test_tasks_join_in_order_and_a_task_not_joined_is_untouched(caplog):
    data, tasks = _data()
    model = _model(tasks)
    initial_b = [p.detach().clone() for p in model.heads["b"].parameters()]
    snapshots = {}
    curriculum = OrderCurriculum(["a", "b", "c"], order=["c", "b"], every=2)  # a is not listed: from epoch 1

    def snapshot(record):
        snapshots[record["epoch"]] = [p.detach().clone() for p in model.heads["b"].parameters()]

    trainer = Trainer(model, tasks, epochs=4, batch_size=32, lr=0.05, on_epoch_end=snapshot, curriculum=curriculum)
    with caplog.at_level(logging.INFO, logger="taskloom.train.curriculum"):
        history = trainer.fit(data.subset(range(64)), data.subset(range(64, 96)))
    assert "task b joins at epoch 3" in caplog.text and "task c joins at epoch 1" in caplog.text
    assert curriculum.join_epoch == {"a": 1, "b": 3, "c": 1}
    schedule = [r["curriculum"]["active"] for r in history.records]
    assert schedule == [["a", "c"], ["a", "c"], ["a", "b", "c"], ["a", "b", "c"]]
    assert [r["curriculum"]["joins"] for r in history.records] == [["a", "c"], [], ["b"], []]
    assert [sorted(r["train_loss"]) for r in history.records] == [["a", "c"], ["a", "c"], ["a", "b", "c"]] + [
        ["a", "b", "c"]]
    assert all(torch.equal(p, q) for p, q in zip(snapshots[2], initial_b))  # b's head untrained before it joins
    assert not all(torch.equal(p, q) for p, q in zip(snapshots[3], initial_b))
    assert history.best_epoch >= 3  # no checkpoint is selected before every task has joined
    assert "b" in history.best_per_task


def test_the_schedule_is_in_metrics_jsonl_of_a_run(tmp_path):
    from taskloom.train.runner import run_training

    config = parse_config({"data": {"dataset": "synthetic", "options": {"n": 200, "d": 4}}, "tasks": TASKS,
                           "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
                           "train": {"epochs": 3, "batch_size": 64}, "output_dir": str(tmp_path),
                           "curriculum": {"mode": "order", "order": ["b", "a"], "every": 2}})
    result = run_training(config)
    lines = (tmp_path / result["run_dir"] / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["curriculum"]["active"] for r in records] == [["b"], ["b"], ["a", "b"]]
    assert records[0]["curriculum"]["join_epoch"] == {"a": 3, "b": 1}


# -- sampling -------------------------------------------------------------------------------------------
def test_probabilities_are_linear_over_epochs():
    curriculum = SamplingCurriculum(["a", "b", "c"], {"a": (0.2, 1.0), "b": (0.9, 0.1)}, epochs=5)
    assert curriculum.probabilities(1) == pytest.approx({"a": 0.2, "b": 0.9, "c": 1.0})
    assert curriculum.probabilities(3) == pytest.approx({"a": 0.6, "b": 0.5, "c": 1.0})
    assert curriculum.probabilities(5) == pytest.approx({"a": 1.0, "b": 0.1, "c": 1.0})
    assert SamplingCurriculum(["a"], {"a": (0.3, 0.9)}, epochs=1).probabilities(1) == pytest.approx({"a": 0.3})


def test_inclusion_frequencies_follow_the_schedule():
    curriculum = SamplingCurriculum(["a", "b", "c"], {"a": (0.2, 1.0), "b": (0.9, 0.1)}, epochs=5, seed=3)
    draws = 20_000
    for epoch in (1, 3, 5):
        curriculum.begin_epoch(None, epoch, None)
        counts = {"a": 0, "b": 0, "c": 0}
        both = 0
        for _ in range(draws):
            included = curriculum.draw()
            for name in included:
                counts[name] += 1
            both += "a" in included and "b" in included
        expected = curriculum.probabilities(epoch)
        for name in counts:
            assert abs(counts[name] / draws - expected[name]) < 0.012, (epoch, name, counts)
        assert abs(both / draws - expected["a"] * expected["b"]) < 0.012  # tasks are drawn independently
        assert curriculum.record(epoch)["included"] == counts and curriculum.record(epoch)["steps"] == draws


def test_draws_repeat_for_the_same_seed_and_epoch():
    def sequence(seed, epoch):
        curriculum = SamplingCurriculum(["a", "b"], {"a": (0.5, 0.5), "b": (0.3, 0.3)}, epochs=3, seed=seed)
        curriculum.begin_epoch(None, epoch, None)
        return [tuple(curriculum.draw()) for _ in range(200)]

    assert sequence(1, 2) == sequence(1, 2)
    assert sequence(1, 2) != sequence(1, 3) and sequence(1, 2) != sequence(2, 2)


def test_sampling_in_the_trainer_trains_only_drawn_tasks():
    data, tasks = _data(n=160)
    curriculum = SamplingCurriculum(["a", "b", "c"], {"a": (0.5, 0.5), "b": (0.0, 1.0)}, epochs=3, seed=0)
    model = _model(tasks)
    initial_b = [p.detach().clone() for p in model.heads["b"].parameters()]
    heads_b = {}
    trainer = Trainer(model, tasks, epochs=3, batch_size=8, curriculum=curriculum,
                      on_epoch_end=lambda r: heads_b.setdefault(r["epoch"], [p.detach().clone() for p in
                                                                             model.heads["b"].parameters()]))
    history = trainer.fit(data.subset(range(128)), data.subset(range(128, 160)))
    first, last = history.records[0]["curriculum"], history.records[-1]["curriculum"]
    assert first["included"]["b"] == 0 and first["included"]["c"] == first["steps"] == 16
    assert all(torch.equal(p, q) for p, q in zip(heads_b[1], initial_b))  # probability 0: never trained
    assert last["included"]["b"] == 16 and last["probabilities"]["b"] == 1.0
    assert 0 < first["included"]["a"] < 16
    assert "b" not in history.records[0]["train_loss"] and history.best_epoch >= 2


def test_a_model_of_a_group_of_the_tasks_keeps_its_own_tasks_of_the_curriculum():
    config = _config({"mode": "order", "order": ["b", "c", "a"], "every": 1},
                     tasks=TASKS + [{"name": "c", "kind": "regression", "target": "y1"}])
    curriculum = build_curriculum(config, ["a", "c"], epochs=4, all_tasks=["a", "b", "c"])
    assert curriculum.join_epoch == {"c": 1, "a": 2}  # the order of the group's tasks, without b
    sampling = _config({"mode": "sampling", "probabilities": {"a": 0.5, "b": 0.25}})
    assert build_curriculum(sampling, ["b"], epochs=4, all_tasks=["a", "b"]).probabilities(1) == {"b": 0.25}


def _balancer_names():
    from taskloom.balancing import BALANCERS

    return list(BALANCERS)


@pytest.mark.parametrize("method", _balancer_names())
def test_every_balancing_method_trains_under_a_curriculum(method):
    """Before b joins only a's head and the trunk change; after, b's head changes too; losses stay finite."""
    from taskloom import build_balancer

    data, tasks = _data(n=64)
    tasks = tasks[:2]
    model = _model(tasks)
    names = [t.name for t in tasks]
    initial_b = [p.detach().clone() for p in model.heads["b"].parameters()]
    initial_a = [p.detach().clone() for p in model.heads["a"].parameters()]
    seen = {}
    options = {"weights": {"a": 1.0, "b": 2.0}} if method == "static" else {}
    trainer = Trainer(model, tasks, build_balancer(method, names, **options), epochs=2, batch_size=16, lr=0.01,
                      curriculum=OrderCurriculum(names, order=["a", "b"], every=1),
                      on_epoch_end=lambda r: seen.setdefault(r["epoch"], [p.detach().clone() for p in
                                                                          model.heads["b"].parameters()]))
    validation = data if getattr(trainer.balancer, "needs_validation", False) else None  # Auto-Lambda's
    history = trainer.fit(data, validation)
    assert all(torch.equal(p, q) for p, q in zip(seen[1], initial_b))
    assert not all(torch.equal(p, q) for p, q in zip(model.heads["b"].parameters(), initial_b))
    assert not all(torch.equal(p, q) for p, q in zip(model.heads["a"].parameters(), initial_a))
    assert sorted(history.records[0]["train_loss"]) == ["a"] and sorted(history.records[1]["train_loss"]) == ["a", "b"]
    assert all(torch.isfinite(torch.tensor(list(r["train_loss"].values()))).all() for r in history.records)


def test_accumulated_micro_batches_share_the_steps_draw():
    data, tasks = _data(n=64)
    curriculum = SamplingCurriculum(["a", "b", "c"], {"b": (0.5, 0.5)}, epochs=2, seed=1)
    trainer = Trainer(_model(tasks), tasks, epochs=2, batch_size=8, accumulate=2, curriculum=curriculum)
    history = trainer.fit(data)
    record = history.records[0]["curriculum"]
    assert record["steps"] == 4 and record["included"]["a"] == 4 and 0 < record["included"]["b"] < 4


def test_patience_counts_only_epochs_after_every_task_joined():
    data, tasks = _data()
    curriculum = OrderCurriculum(["a", "b", "c"], order=["a", "b", "c"], every=2)
    trainer = Trainer(_model(tasks), tasks, epochs=8, batch_size=32, lr=0.0, patience=1, curriculum=curriculum)
    history = trainer.fit(data.subset(range(64)), data.subset(range(64, 96)))
    # lr 0: nothing improves after c joins (epoch 5 is the first eligible, epoch 6 stops the run of 8)
    assert [r["epoch"] for r in history.records] == [1, 2, 3, 4, 5, 6]
    assert history.best_epoch == 5 and history.epochs_without_improvement == 1


def test_a_resumed_sampling_run_ends_like_an_uninterrupted_one(tmp_path):
    data, tasks = _data(n=64)

    def build(run_dir):
        run_dir.mkdir(exist_ok=True)
        curriculum = SamplingCurriculum(["a", "b", "c"], {"a": (0.3, 0.9), "b": (0.5, 0.5)}, epochs=3, seed=4)
        return Trainer(_model(tasks), tasks, epochs=3, batch_size=8, run_dir=run_dir, curriculum=curriculum)

    interrupted = build(tmp_path / "cut")
    interrupted.epochs = 2  # stops after epoch 2; the resumed trainer continues at epoch 3
    interrupted.fit(data)
    resumed = build(tmp_path / "cut")
    assert resumed.resume() and resumed.start_epoch == 3
    resumed.fit(data)
    whole = build(tmp_path / "whole")
    whole.fit(data)
    assert [r["curriculum"]["included"] for r in resumed.history.records] == [
        r["curriculum"]["included"] for r in whole.history.records]
    for p, q in zip(resumed.model.parameters(), whole.model.parameters()):
        assert torch.equal(p, q)
