"""Several data sets at once: aligned tasks, sampling frequencies that match each strategy's formula."""
from __future__ import annotations

import math

import pytest
import torch

from taskloom.data.dataset import MultiTaskDataset
from taskloom.data.mixing import MixedLoader, align_tasks, source_probabilities
from taskloom.losses import masked_loss, task_losses
from taskloom.task import Task


def source(n: int, tasks: dict[str, str], features: int = 4, offset: float = 0.0) -> MultiTaskDataset:
    """A source of n rows whose inputs carry the source's offset in column 0 (to tell rows apart)."""
    generator = torch.Generator().manual_seed(n)
    x = torch.randn(n, features, generator=generator)
    x[:, 0] = offset
    targets = {}
    for name, kind in tasks.items():
        targets[name] = torch.randint(0, 3, (n,), generator=generator) if kind == "class" else torch.randn(n)
    return MultiTaskDataset(x, targets)


@pytest.fixture
def sources():
    return {
        "a": source(300, {"seg": "class", "depth": "value"}, offset=0.0),
        "b": source(100, {"seg": "class"}, offset=1.0),
        "c": source(50, {"depth": "value"}, offset=2.0),
    }


def test_align_gives_every_source_every_task_with_a_false_mask(sources):
    aligned = align_tasks(sources, ["seg", "depth"])
    assert set(aligned["b"].targets) == {"seg", "depth"}
    assert not aligned["b"].masks["depth"].any() and aligned["b"].masks["seg"].all()
    assert aligned["c"].targets["seg"].dtype == torch.int64 and aligned["c"].targets["seg"].shape == (50,)
    with pytest.raises(ValueError, match="'normals' is in no source"):
        align_tasks(sources, ["normals"])


def frequencies(loader: MixedLoader, epochs: range) -> dict[str, float]:
    counts = {"a": 0, "b": 0, "c": 0}
    names = ["a", "b", "c"]
    for epoch in epochs:
        loader.set_epoch(epoch)
        for batch in loader:
            offsets = batch.inputs[:, 0].long()
            for i, name in enumerate(names):
                counts[name] += int((offsets == i).sum())
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"strategy": "proportional"}, {"a": 300 / 450, "b": 100 / 450, "c": 50 / 450}),
        ({"strategy": "temperature", "temperature": 2.0}, None),
        ({"strategy": "temperature", "temperature": 1.0, "cap": 100}, {"a": 0.4, "b": 0.4, "c": 0.2}),
        ({"strategy": "given", "probabilities": {"a": 1, "b": 0, "c": 3}}, {"a": 0.25, "b": 0.0, "c": 0.75}),
    ],
)
@pytest.mark.parametrize("homogeneous", [True, False])
def test_empirical_frequencies_match_the_formula(sources, options, expected, homogeneous):
    if expected is None:
        roots = {"a": math.sqrt(300), "b": 10.0, "c": math.sqrt(50)}
        expected = {k: v / sum(roots.values()) for k, v in roots.items()}
    loader = MixedLoader(sources, batch_size=10, homogeneous=homogeneous, seed=1, **options)
    assert loader.probabilities() == pytest.approx(expected)
    observed = frequencies(loader, range(40))  # 40 epochs x 45 batches x 10 rows
    for name in expected:
        assert observed[name] == pytest.approx(expected[name], abs=0.03)


def test_annealed_schedule_moves_from_proportional_towards_uniform(sources):
    sizes = {"a": 300, "b": 100, "c": 50}
    first = source_probabilities(sizes, "annealed", epoch=0, epochs=5)
    last = source_probabilities(sizes, "annealed", epoch=4, epochs=5)
    assert first == pytest.approx({k: v / 450 for k, v in sizes.items()})
    powered = {k: v**0.2 for k, v in sizes.items()}
    assert last == pytest.approx({k: v / sum(powered.values()) for k, v in powered.items()})
    middle = source_probabilities(sizes, "annealed", epoch=2, epochs=5)  # alpha = 1 - 0.8 * 2/4 = 0.6
    powered = {k: v**0.6 for k, v in sizes.items()}
    assert middle == pytest.approx({k: v / sum(powered.values()) for k, v in powered.items()})
    loader = MixedLoader(sources, batch_size=5, strategy="annealed", epochs=5, homogeneous=False, seed=2)
    early, late = frequencies(loader, range(0, 1)), frequencies(loader, range(4, 5))
    assert early["c"] == pytest.approx(first["c"], abs=0.07) and late["c"] == pytest.approx(last["c"], abs=0.07)


def test_given_probabilities_are_validated(sources):
    with pytest.raises(ValueError, match=r"missing \['c'\], unknown \['z'\]"):
        MixedLoader(sources, 8, strategy="given", probabilities={"a": 1, "b": 1, "z": 1})
    with pytest.raises(ValueError, match="non-negative"):
        MixedLoader(sources, 8, strategy="given", probabilities={"a": -1, "b": 1, "c": 1})
    with pytest.raises(ValueError, match="sum to 0"):
        MixedLoader(sources, 8, strategy="given", probabilities={"a": 0, "b": 0, "c": 0})
    with pytest.raises(ValueError, match="needs epochs"):
        MixedLoader(sources, 8, strategy="annealed")
    with pytest.raises(ValueError, match="strategy must be one of"):
        MixedLoader(sources, 8, strategy="round-robin")


def test_mixed_batches_need_one_input_shape(sources):
    sources["d"] = source(20, {"seg": "class"}, features=6)
    with pytest.raises(ValueError, match="same input shape"):
        MixedLoader(sources, 8, homogeneous=False)
    MixedLoader(sources, 8, homogeneous=True)


def test_homogeneous_batches_come_from_one_source_and_are_deterministic(sources):
    loader = MixedLoader(sources, batch_size=16, seed=5)
    assert len(loader) == math.ceil(450 / 16)
    loader.set_epoch(3)
    first = [b.inputs for b in loader]
    second = [b.inputs for b in loader]
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert all(len(set(x[:, 0].tolist())) == 1 for x in first)
    loader.set_epoch(4)
    assert not all(torch.equal(x, b.inputs) for x, b in zip(first, loader))


@pytest.mark.parametrize("homogeneous", [True, False])
def test_a_source_without_a_task_never_adds_to_its_loss(sources, homogeneous):
    """Rows of b (no depth label) and of c (no seg label) add nothing to that task's loss or gradient: checked on
    batches of b alone (homogeneous: no depth loss at all) and on batches mixing them with labelled rows."""
    tasks = {"seg": Task("seg", "multiclass", 3), "depth": Task("depth", "regression")}
    loader = MixedLoader(sources, batch_size=12, homogeneous=homogeneous, seed=0)
    only_b = 0  # batches of b rows alone: no depth loss
    mixed_checked = {"depth": 0, "seg": 0}  # unlabelled rows checked inside a batch that has the task's loss
    for batch in loader:
        from_b = batch.inputs[:, 0] == 1.0
        from_c = batch.inputs[:, 0] == 2.0
        assert not batch.masks.get("depth", torch.ones(len(batch), dtype=torch.bool))[from_b].any()
        assert not batch.masks.get("seg", torch.ones(len(batch), dtype=torch.bool))[from_c].any()
        outputs = {"seg": torch.randn(len(batch), 3, requires_grad=True), "depth": torch.randn(len(batch), 1,
                                                                                              requires_grad=True)}
        losses = task_losses(outputs, batch, tasks)
        if bool(from_b.all()):
            only_b += 1
            assert "depth" not in losses
        for name, unlabelled in (("depth", from_b), ("seg", from_c)):
            if name not in losses:
                continue
            keep = ~unlabelled
            expected = masked_loss(tasks[name], outputs[name][keep], batch.targets[name][keep])
            assert torch.allclose(losses[name], expected)
            (grad,) = torch.autograd.grad(losses[name], outputs[name])
            assert not grad[unlabelled].any()
            if unlabelled.any():
                mixed_checked[name] += 1
    if homogeneous:  # one source per batch: b's batches carry no depth loss, and no batch mixes sources
        assert only_b > 0
        assert mixed_checked == {"depth": 0, "seg": 0}
    else:  # mixed batches: b's rows sit beside labelled depth rows (and c's beside seg rows) and add nothing
        assert mixed_checked["depth"] > 0 and mixed_checked["seg"] > 0
