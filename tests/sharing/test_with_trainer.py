"""Every architecture trained by the Trainer with gradient-level balancing, and the trainer's per-epoch model hook."""
from __future__ import annotations

import pytest
import torch

from sharing._helpers import IN_FEATURES, mlp, tasks
from sharing.test_roles import CASES, IDS, build
from taskloom.balancing import build_balancer
from taskloom.data.dataset import MultiTaskDataset
from taskloom.sharing import ARCHITECTURES
from taskloom.train.trainer import Trainer


def dataset(n: int = 64) -> MultiTaskDataset:
    x = torch.randn(n, IN_FEATURES, generator=torch.Generator().manual_seed(0))
    targets = {
        "sign": (x[:, 0] > 0).float(),
        "quadrant": (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long(),
        "level": 2 * x[:, 0] - x[:, 1],
    }
    return MultiTaskDataset(x, targets)


def train(model, balancing: str = "pcgrad", epochs: int = 1, **options) -> Trainer:
    balancer = build_balancer(balancing, model.task_names, **options)
    trainer = Trainer(model, tasks(), balancer, lr=0.01, epochs=epochs, batch_size=32, seed=0)
    trainer.fit(dataset())
    return trainer


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
@pytest.mark.parametrize("balancing", ["pcgrad", "mgda"])
def test_a_gradient_method_trains_every_parameter_of_every_architecture(name, options, balancing):
    model = build(name, options)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = train(model, balancing)
    assert all(torch.isfinite(torch.tensor(v)) for v in trainer.history.records[-1]["train_loss"].values())
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, f"{name} with {balancing}: {unchanged} did not change"


@pytest.mark.parametrize("name", ["hard", "hybrid"])
def test_representation_mode_runs_where_there_is_one_shared_representation(name):
    model = build(name, {})
    assert model.has_representation
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, "mgda", mode="representation")
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("name", ["soft", "cross_stitch", "mmoe", "low_level", "cascade", "interaction", "mtan",
                                  "dselect_k"])
def test_architectures_without_one_representation_say_so_in_representation_mode(name):
    model = build(name, {})
    assert not model.has_representation
    with pytest.raises(ValueError, match="mode='parameters'"):
        train(model, "mgda", mode="representation")


def test_the_trainer_refreshes_the_cascade_snapshot_after_every_epoch():
    torch.manual_seed(0)
    model = ARCHITECTURES.get("cascade")(mlp, tasks(), successive=0.5)
    start = [p.detach().clone() for p in model.structural_shared()]
    seen = []
    original = model.on_epoch_end

    def spy(epoch):
        original(epoch)
        seen.append((epoch, [getattr(model, n).clone() for n in model._snapshot_names]))

    model.on_epoch_end = spy
    train(model, "equal", epochs=2)
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert not torch.equal(seen[0][1][0], start[0]) and not torch.equal(seen[0][1][0], seen[1][1][0])
    assert all(torch.equal(s, p) for s, p in zip(seen[1][1], model.structural_shared()))
    assert float(model.regularization().detach()) == 0.0


def test_without_successive_regularization_the_hook_keeps_no_snapshot():
    torch.manual_seed(0)
    model = ARCHITECTURES.get("cascade")(mlp, tasks())
    train(model, "equal")
    assert model._snapshot_names == [] and model.regularization() is None
