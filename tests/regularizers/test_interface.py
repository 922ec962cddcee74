"""Every registered regularizer through the trainer's interface on a tiny MultiTaskModel."""
import json

import pytest
import torch
from torch import nn

from taskloom import MultiTaskDataset, MultiTaskModel, Task
from taskloom.regularizers import REGULARIZERS, Regularizer, build_regularizer, select_task_parameters

NAMES = list(REGULARIZERS)
SMOOTH = {"mean", "cluster", "trl"}


def tiny_model(seed: int = 0) -> tuple[MultiTaskModel, list[Task]]:
    torch.manual_seed(seed)
    tasks = [Task("y1", "regression"), Task("y2", "regression"), Task("flag", "binary")]
    trunk = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
    return MultiTaskModel(trunk, tasks=tasks, out_features=6), tasks


def test_registry_lists_every_penalty():
    assert {"l21", "l1inf", "trace", "mean", "cluster", "trl"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_trainer_interface(name):
    model, _ = tiny_model()
    regularizer = build_regularizer(name, model, strength=0.1)
    assert isinstance(regularizer, Regularizer)
    assert regularizer.task_names == ["y1", "y2", "flag"]
    assert all(tensors == [model.heads[t].weight] for t, tensors in regularizer.groups.items())  # default choice
    penalty = regularizer.penalty()
    if name in SMOOTH:
        assert penalty.requires_grad and penalty.ndim == 0
        penalty.backward()
        assert all(model.heads[t].weight.grad is not None and model.heads[t].weight.grad.abs().sum() > 0
                   for t in regularizer.task_names)
        assert model.trunk[0].weight.grad is None
    else:
        assert penalty is None
    before = {t: model.heads[t].weight.detach().clone() for t in regularizer.task_names}
    regularizer.proximal_step(0.05)
    changed = any(not torch.equal(before[t], model.heads[t].weight) for t in before)
    assert changed == (name not in SMOOTH)
    assert regularizer.value() >= 0
    json.dumps(regularizer.report())
    clone = build_regularizer(name, tiny_model(seed=1)[0], strength=0.1)
    clone.load_state_dict(regularizer.state_dict())
    assert {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in clone.state_dict().items()} == \
        {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in regularizer.state_dict().items()}


@pytest.mark.parametrize("name", NAMES)
def test_runs_inside_the_trainer(name):
    from taskloom.train.trainer import Trainer

    model, tasks = tiny_model()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    data = MultiTaskDataset(x, {"y1": x[:, 0], "y2": x[:, 0] - x[:, 1], "flag": (x[:, 2] > 0).float()}, {})
    regularizer = build_regularizer(name, model, strength=0.5 if name in SMOOTH else 2.0)
    trainer = Trainer(model, tasks, optimizer="sgd", lr=0.1, epochs=2, batch_size=32, regularizers=[regularizer])
    trainer.fit(data)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if name in ("l21", "l1inf", "block_sparse"):
        assert regularizer.report()["zero_rows"] > 0


def test_parameter_patterns_and_callables_select_the_same_tensors():
    model, _ = tiny_model()
    expected = {t: [model.heads[t].weight] for t in model.task_names}
    assert select_task_parameters(model, "heads.{task}.weight") == expected
    assert select_task_parameters(model, "heads.*.weight") == expected
    assert select_task_parameters(model, lambda m: {t: m.heads[t].weight for t in m.task_names}) == expected
    both = select_task_parameters(model, ["heads.{task}.weight", "heads.{task}.bias"], tasks=["y1", "y2"])
    assert both == {t: [model.heads[t].weight, model.heads[t].bias] for t in ["y1", "y2"]}


def test_selection_errors_say_what_to_do():
    model, _ = tiny_model()
    with pytest.raises(ValueError, match="match no parameter of task 'y1'"):
        select_task_parameters(model, "towers.{task}.weight")
    with pytest.raises(ValueError, match="names no task"):
        select_task_parameters(model, "trunk.0.weight")
    with pytest.raises(ValueError, match="at least two tasks"):
        select_task_parameters(model, tasks=["y1"])
    with pytest.raises(ValueError, match="strength"):
        build_regularizer("mean", model, strength=-1.0)
    with pytest.raises(KeyError, match="known"):
        REGULARIZERS.get("nope")
