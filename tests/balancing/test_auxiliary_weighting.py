"""Auxiliary weighting around a balancer: scheduled weights, similarity gates, checkpoints, every parameter trained."""
import math

import pytest
import torch
from torch import nn

from taskloom import MultiTaskDataset, MultiTaskModel, Task
from taskloom.balancing import build_balancer
from taskloom.balancing.auxiliary_weighting import AuxiliarySpec, AuxiliaryWeighting
from taskloom.train.checkpoint import load_checkpoint
from taskloom.train.trainer import Trainer
from taskloom.trunks import MLP


def _data(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 1.5])
    return MultiTaskDataset(x, {"y": y, "same": y.clone(), "opp": -y}, {})


def _trainer(aux, method="equal", trunk=None, epochs=2, batch_size=32, names=("y", "same"), **options):
    torch.manual_seed(0)
    tasks = [Task(n, "regression", role="main" if n == "y" else "auxiliary") for n in names]
    model = MultiTaskModel(trunk if trunk is not None else MLP(4, (8,)), tasks=tasks)
    main = [t.name for t in tasks if t.role == "main"]
    balancer = AuxiliaryWeighting(build_balancer(method, main), aux)
    settings = dict(epochs=epochs, batch_size=batch_size, optimizer="sgd", momentum=0.0, lr=0.01, seed=0)
    return Trainer(model, tasks, balancer, **{**settings, **options})


@pytest.mark.parametrize("schedule, expected", [
    ("linear", [0.375, 0.25, 0.125, 0.0]),  # 0.5 * (1 - s/4)
    ("cosine", [0.25 * (1 + math.cos(math.pi * s / 4)) for s in (1, 2, 3, 4)]),
])
def test_schedule_reaches_its_closed_form_at_each_step_of_a_trainer(schedule, expected):
    seen = []
    trainer = _trainer({"same": AuxiliarySpec(0.5, schedule)},
                       on_step=lambda step, steps: seen.append(trainer.balancer.last_weights()["same"]))
    history = trainer.fit(_data())  # 2 epochs of 2 steps: progress s / 4
    assert seen == pytest.approx(expected, abs=1e-12)
    assert [r["auxiliary"]["same"]["weight"] for r in history.records] == pytest.approx([expected[1], expected[3]],
                                                                                       abs=1e-12)
    assert history.records[-1]["weights"]["same"] == pytest.approx(0.0, abs=1e-12)


def test_cosine_weight_zero_at_the_last_step_leaves_the_auxiliary_head_untouched():
    trainer = _trainer({"same": AuxiliarySpec(1.0, "cosine")}, epochs=1, batch_size=64)  # one step: progress 1
    before = [p.detach().clone() for p in trainer.model.heads["same"].parameters()]
    trunk_before = [p.detach().clone() for p in trainer.model.trunk.parameters()]
    trainer.fit(_data())
    for b, p in zip(before, trainer.model.heads["same"].parameters()):
        assert torch.equal(b, p)  # plain SGD, weight 0: no gradient reached it
    assert any(not torch.equal(b, p) for b, p in zip(trunk_before, trainer.model.trunk.parameters()))


def _linear_trainer(gating, epochs=1, opp_weight=1.0):
    """A linear trunk at zero and equal heads: the auxiliary gradient on the trunk is +-(main gradient)."""
    trunk = nn.Linear(4, 3)
    aux = {"same": AuxiliarySpec(1.0, "constant", gating), "opp": AuxiliarySpec(opp_weight, "constant", gating)}
    trainer = _trainer(aux, trunk=trunk, names=("y", "same", "opp"), epochs=epochs, batch_size=64)
    with torch.no_grad():
        trunk.weight.zero_()
        trunk.bias.zero_()
        for name in ("same", "opp"):
            for mine, main in zip(trainer.model.heads[name].parameters(), trainer.model.heads["y"].parameters()):
                mine.copy_(main)
    return trainer


@pytest.mark.parametrize("gating", ["unweighted", "weighted"])
def test_opposing_auxiliary_is_gated_off_and_aligned_one_kept(gating):
    trainer = _linear_trainer(gating)
    opp_before = [p.detach().clone() for p in trainer.model.heads["opp"].parameters()]
    history = trainer.fit(_data())
    gates = dict(zip(trainer.balancer.auxiliary_names, trainer.balancer.gates.tolist()))
    assert gates["same"] == pytest.approx(1.0, abs=1e-5) and gates["opp"] == 0.0
    assert history.records[0]["auxiliary"]["opp"]["gate"] == 0.0
    assert history.records[0]["auxiliary"]["same"]["gate"] == pytest.approx(1.0, abs=1e-5)
    for b, p in zip(opp_before, trainer.model.heads["opp"].parameters()):
        assert torch.equal(b, p)  # gate 0: its loss contributed nothing


def test_gated_step_equals_main_plus_aligned_auxiliary_alone():
    gated = _linear_trainer("unweighted")
    gated.fit(_data())
    plain = _linear_trainer("none", opp_weight=0.0)  # by hand: y + same, what gates (1, 0) make of it
    plain.fit(_data())
    for a, b in zip(gated.model.parameters(), plain.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_resume_restores_step_count_and_gates(tmp_path):
    data = _data(96)
    train, val = data.subset(range(64)), data.subset(range(64, 96))
    spec = {"same": AuxiliarySpec(0.7, "linear", "weighted")}
    straight = _trainer(spec, run_dir=tmp_path / "straight", epochs=3)
    straight.fit(train, val)

    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    first = _trainer(spec, run_dir=tmp_path / "resumed", epochs=3, on_epoch_end=interrupt)
    with pytest.raises(KeyboardInterrupt):
        first.fit(train, val)
    state = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")  # weights_only=True
    assert int(state["balancer"]["step"]) == 4
    second = _trainer(spec, run_dir=tmp_path / "resumed", epochs=3)
    assert second.resume()
    assert int(second.balancer.step) == 4 and torch.equal(second.balancer.gates, first.balancer.gates)
    second.fit(train, val)
    assert int(second.balancer.step) == 6
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method, options", [("equal", {}), ("uncertainty", {}), ("pcgrad", {}),
                                             ("mgda", {"mode": "representation"})])
@pytest.mark.parametrize("gating", ["none", "unweighted"])
def test_every_trainable_parameter_is_updated(method, options, gating):
    torch.manual_seed(0)
    tasks = [Task("y", "regression"), Task("z", "regression"), Task("same", "regression", role="auxiliary")]
    model = MultiTaskModel(MLP(4, (8,)), tasks=tasks)
    inner = build_balancer(method, ["y", "z"], **options)
    balancer = AuxiliaryWeighting(inner, {"same": AuxiliarySpec(0.5, "constant", gating)})
    trainer = Trainer(model, tasks, balancer, epochs=1, batch_size=64, lr=0.01)
    data = _data()
    data = MultiTaskDataset(data.inputs, {**data.targets, "z": data.inputs[:, 0]}, {})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.fit(data)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(before[n], p)]
    assert unchanged == []


def test_main_and_auxiliary_names_must_not_overlap_and_specs_are_checked():
    with pytest.raises(ValueError, match="both main"):
        AuxiliaryWeighting(build_balancer("equal", ["y", "same"]), {"same": AuxiliarySpec()})
    with pytest.raises(ValueError, match="gating"):
        AuxiliarySpec(1.0, "constant", "sometimes")
    with pytest.raises(ValueError, match="weight"):
        AuxiliarySpec(-1.0)


def test_a_decaying_schedule_without_a_plan_is_refused_with_what_to_do():
    tasks = [Task("y", "regression"), Task("same", "regression", role="auxiliary")]
    model = MultiTaskModel(MLP(4, (8,)), tasks=tasks)
    balancer = AuxiliaryWeighting(build_balancer("equal", ["y"]), {"same": AuxiliarySpec(1.0, "linear")})
    data = _data()
    outputs = model(data.inputs)
    losses = {n: ((outputs[n].squeeze(-1) - data.targets[n]) ** 2).mean() for n in ("y", "same")}
    with pytest.raises(ValueError, match="plan"):
        balancer.backward(losses, model)


def test_accumulation_and_data_parallel_gating_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="train.accumulate: 1"):
        _trainer({"same": AuxiliarySpec(0.5)}, accumulate=2)
    balancer = AuxiliaryWeighting(build_balancer("equal", ["y"]), {"same": AuxiliarySpec(0.5, gating="weighted")})
    balancer.communicator = object()
    with pytest.raises(ValueError, match="set gating: none"):
        balancer.check_data_parallel()
    ungated = AuxiliaryWeighting(build_balancer("pcgrad", ["y"]), {"same": AuxiliarySpec(0.5)})
    ungated.communicator = object()
    with pytest.raises(ValueError, match="loss-weighting method"):
        ungated.check_data_parallel()
    loss_level = AuxiliaryWeighting(build_balancer("dwa", ["y"]), {"same": AuxiliarySpec(0.5)})
    loss_level.communicator = marker = object()
    loss_level.check_data_parallel()
    assert loss_level.inner.communicator is marker
