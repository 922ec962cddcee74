"""Gradient accumulation: N micro-batches per step give the step on their concatenation, for every method."""
from __future__ import annotations

import pytest
import torch

from train._accumulation import (
    DATA_PARALLEL_CASES, MICRO, ROWS, TOLERANCE, flat_parameters, key_of, make_data, make_trainer, spawned_rank,
)
from train._ddp_equivalence import cases

#: refused with train.accumulate > 1, with the reason the error must give
REFUSED = {
    "graddrop/representation": "not a function of the step's Gramian",
    "autolambda": "AutoLambda is neither",  # its lookahead is defined on one batch
}


@pytest.mark.parametrize("name,mode", cases(), ids=[key_of(*case) for case in cases()])
def test_micro_batches_step_like_their_concatenation(name, mode):
    data, tasks = make_data()
    key = key_of(name, mode)
    if key in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[key]):
            make_trainer(name, mode, tasks, accumulate=3)
        return
    whole = make_trainer(name, mode, tasks)
    accumulating = make_trainer(name, mode, tasks, accumulate=3)
    everything = data.batch(torch.arange(ROWS))
    micro = [data.batch(torch.arange(start, start + MICRO)) for start in range(0, ROWS, MICRO)]
    for _ in range(2):  # the second step sees the state the first one left (histories, FAMO's logits)
        whole_losses = whole.train_step(everything)
        micro_losses = accumulating.train_step(micro)
        assert sorted(micro_losses) == sorted(whole_losses)
        for task, loss in whole_losses.items():
            assert float(micro_losses[task]) == pytest.approx(float(loss.detach()), rel=TOLERANCE)
    expected, got = flat_parameters(whole), flat_parameters(accumulating)
    assert not torch.equal(expected, flat_parameters(make_trainer(name, mode, tasks)))  # the steps moved them
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= TOLERANCE, key


def test_one_micro_batch_per_step_is_todays_step_bit_for_bit():
    data, tasks = make_data()
    for name, mode in (("equal", None), ("pcgrad", "parameters"), ("mgda", "representation")):
        default = make_trainer(name, mode, tasks)
        explicit = make_trainer(name, mode, tasks, accumulate=1, epochs=2)
        default.epochs = 2
        default.fit(data)
        explicit.fit(data)
        assert torch.equal(flat_parameters(default), flat_parameters(explicit))
        assert default.history.records[-1]["train_loss"] == explicit.history.records[-1]["train_loss"]


def test_an_epoch_counts_optimizer_steps():
    """3 batches of 8 rows with accumulate 2: two steps (2 micro-batches, then 1), the schedule and the
    per-epoch loss follow the steps."""
    data, tasks = make_data()
    trainer = make_trainer("equal", None, tasks, accumulate=2, epochs=1)
    seen = []
    trainer.on_step = lambda step, steps: seen.append((step, steps))
    trainer.fit(data)
    assert seen == [(1, 2), (2, 2)]


def test_bad_values_are_refused_naming_the_field():
    _, tasks = make_data()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="train.accumulate must be a whole number >= 1"):
            make_trainer("equal", None, tasks, accumulate=bad)


def test_accumulation_composes_with_data_parallelism(tmp_path):
    import json

    import torch.multiprocessing as mp

    from train._ddp_equivalence import free_tcp_address

    out = tmp_path / "table.json"
    mp.spawn(spawned_rank, args=(2, free_tcp_address(), str(out)), nprocs=2, join=True)
    table = json.loads(out.read_text())
    assert sorted(table) == sorted(key_of(*case) for case in DATA_PARALLEL_CASES)
    for key, difference in table.items():
        assert difference <= TOLERANCE, f"{key}: {difference:.2e}"


def test_a_resumed_accumulating_run_continues_bit_exact(tmp_path):
    data, tasks = make_data()
    for run in ("straight", "resumed"):
        (tmp_path / run / "checkpoints").mkdir(parents=True)
    straight = make_trainer("famo", None, tasks, accumulate=2, epochs=4, run_dir=tmp_path / "straight")
    straight.fit(data)
    first = make_trainer("famo", None, tasks, accumulate=2, epochs=2, run_dir=tmp_path / "resumed")
    first.fit(data)
    second = make_trainer("famo", None, tasks, accumulate=2, epochs=4, run_dir=tmp_path / "resumed")
    assert second.resume()
    second.fit(data)
    assert torch.equal(flat_parameters(straight), flat_parameters(second))
    assert torch.equal(straight.balancer.logits, second.balancer.logits)
    assert [r["train_loss"] for r in straight.history.records] == [r["train_loss"] for r in second.history.records]


CONFIG = """\
name: tiny
data:
  dataset: synthetic
  options: {{n: 400}}
model:
  trunk: {{name: mlp, options: {{hidden: [16, 16]}}}}
balancing: {{method: {method}}}
optimizer: {{name: sgd, lr: 0.05}}
train: {{epochs: 2, batch_size: {batch_size}, accumulate: {accumulate}, seed: 0}}
output_dir: {output}
"""


def train_from_config(folder, method: str, batch_size: int, accumulate: int) -> tuple[dict, list[dict]]:
    import json

    from taskloom.cli import main

    folder.mkdir()
    config = folder / "tiny.yaml"
    config.write_text(CONFIG.format(method=method, batch_size=batch_size, accumulate=accumulate,
                                    output=folder / "runs"))
    assert main(["train", str(config)]) == 0
    (run,) = list((folder / "runs").iterdir())
    (model,) = [p for p in run.iterdir() if p.is_dir() and (p / "seed0" / "results.json").is_file()]
    results = json.loads((model / "seed0" / "results.json").read_text())
    metrics = (run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else (model / "seed0" / "metrics.jsonl")
    return results, [json.loads(line) for line in metrics.read_text().splitlines()]


@pytest.mark.parametrize("method", ["uncertainty", "pcgrad"])
def test_taskloom_train_with_accumulate_2_equals_twice_the_batch(tmp_path, method):
    """The loader's order does not depend on the batch size, so 2 x 16 rows per step are the rows of a 32-row
    batch: the runs end with the same test metrics."""
    accumulated, records = train_from_config(tmp_path / "accumulated", method, batch_size=16, accumulate=2)
    doubled, _ = train_from_config(tmp_path / "doubled", method, batch_size=32, accumulate=1)
    assert [r["epoch"] for r in records] == [1, 2]
    assert accumulated["best_epoch"] == doubled["best_epoch"]
    for task, metrics in doubled["test"].items():
        for name, value in metrics.items():
            if isinstance(value, float):
                assert accumulated["test"][task][name] == pytest.approx(value, rel=1e-4, abs=1e-6), (task, name)


def test_a_config_refuses_accumulate_below_one():
    from taskloom.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="train.accumulate"):
        parse_config({"train": {"accumulate": 0}})
    assert parse_config({"train": {"accumulate": 4}}).train.accumulate == 4


@pytest.mark.parametrize("name,mode", [("uncertainty", None), ("pcgrad", "parameters"), ("mgda", "representation")])
def test_fp16_steps_the_scaler_once_per_step(name, mode):
    """Under fp16 the scaler steps (and counts towards its growth) once per N micro-batches, as on the whole batch;
    the parameters agree up to half-precision rounding."""
    data, tasks = make_data()
    whole = make_trainer(name, mode, tasks, amp="fp16")
    accumulating = make_trainer(name, mode, tasks, accumulate=3, amp="fp16")
    start = flat_parameters(whole)
    everything = data.batch(torch.arange(ROWS))
    micro = [data.batch(torch.arange(first, first + MICRO)) for first in range(0, ROWS, MICRO)]
    for _ in range(3):
        whole.train_step(everything)
        accumulating.train_step(micro)
        assert accumulating.scaler.get_scale() == whole.scaler.get_scale()
        assert int(accumulating.scaler._growth_tracker) == int(whole.scaler._growth_tracker)
    expected, got = flat_parameters(whole), flat_parameters(accumulating)
    moved = (expected - start).abs().max()
    assert moved > 0.01
    assert (got - expected).abs().max() <= 0.01 * moved
