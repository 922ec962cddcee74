"""Sequential multi-task learning keeps each task's own model (Pentina et al. 2015: one predictor w_t per task)."""
import copy

import pytest
import torch
from torch import nn

from taskloom import MultiTaskDataset, MultiTaskModel, Task, Trainer
from taskloom.sharing.base import MultiTaskModule
from taskloom.sharing.per_task import PerTaskModels
from taskloom.train.runner import count_parameters
from taskloom.train.sequential import SequentialCurriculum

N, D, STRENGTH = 64, 3, 0.5


class OffsetModel(MultiTaskModule):
    """Task t predicts ``x @ (s + h_t)``: a shared vector s and one vector h_t per task."""

    def __init__(self, names, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.task_names = list(names)
        self.shared = nn.Parameter(torch.randn(D, generator=generator))
        self.heads = nn.ParameterDict({n: nn.Parameter(torch.randn(D, generator=generator)) for n in names})

    def forward(self, inputs):
        return {n: (inputs @ (self.shared + self.heads[n])).unsqueeze(-1) for n in self.task_names}

    def shared_parameters(self):
        return [self.shared]

    def task_parameters(self, name):
        return [self.heads[name]]


def _inputs(seed=0):
    return torch.randn(N, D, generator=torch.Generator().manual_seed(seed))


def _closed_form(x, y, v_prev, strength):
    """argmin_v mean((x v - y)^2) + strength/2 ||v - v_prev||^2: (2 X'X/n + s I)^-1 (2 X'y/n + s v_prev)."""
    x, y, v_prev = x.double(), y.double(), v_prev.double()
    a = 2 * x.T @ x / len(x) + strength * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(a, 2 * x.T @ y / len(x) + strength * v_prev)


def _fit(model, tasks, order, epochs_per_task, data, **kwargs):
    curriculum = SequentialCurriculum(model, [t.name for t in tasks], order=order, strength=STRENGTH,
                                      epochs_per_task=epochs_per_task)
    trainer = Trainer(model, tasks, optimizer="sgd", lr=0.05, momentum=0.9, epochs=epochs_per_task, batch_size=N,
                      curriculum=curriculum, **kwargs)
    trainer.fit(data)
    return trainer


def _two_tasks():
    x = _inputs()
    ya = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(N, generator=torch.Generator().manual_seed(1))
    yb = x @ torch.tensor([1.5, -1.0, 0.0]) + 0.1 * torch.randn(N, generator=torch.Generator().manual_seed(2))
    return x, MultiTaskDataset(x, {"a": ya, "b": yb}), ya, yb


def test_each_task_final_predictor_is_its_own_stages_closed_form():
    # With v = s + h and both pulled toward (s_prev, h_prev), the penalty's best split of v - v_prev is half
    # to each, so the stage objective in v is mean((x v - y)^2) + (strength / 2) / 2 * ||v - v_prev||^2.
    x, data, ya, yb = _two_tasks()
    tasks = [Task("a", "regression"), Task("b", "regression")]
    base = OffsetModel(["a", "b"])
    v0_b = (base.shared + base.heads["b"]).detach().clone()
    model = PerTaskModels(base)
    _fit(model, tasks, ["b", "a"], 300, data)
    v_b = _closed_form(x, yb, v0_b, STRENGTH / 2)  # stage 1: b from its initialization
    v_a = _closed_form(x, ya, v_b, STRENGTH / 2)  # stage 2: a from b's solution (shared part and head)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert torch.allclose(out["b"].reshape(-1).double(), x.double() @ v_b, atol=1e-4)
    assert torch.allclose(out["a"].reshape(-1).double(), x.double() @ v_a, atol=1e-4)
    # a's stage moved the shared vector: b's copy keeps the one b was trained with
    assert not torch.allclose(model.members["a"].shared, model.members["b"].shared, atol=1e-2)


def test_one_shared_model_loses_the_first_tasks_closed_form():
    x, data, ya, yb = _two_tasks()
    tasks = [Task("a", "regression"), Task("b", "regression")]
    model = OffsetModel(["a", "b"])
    v0_b = (model.shared + model.heads["b"]).detach().clone()
    _fit(model, tasks, ["b", "a"], 300, data)
    v_b = _closed_form(x, yb, v0_b, STRENGTH / 2)
    got_b = (model.shared + model.heads["b"]).detach().double()
    assert (got_b - v_b).abs().max() > 1e-2  # the keep: shared failure the per-task copies remove


def test_the_first_tasks_predictions_are_those_of_its_stage_model_exactly():
    x = _inputs()
    targets = {"a": x[:, 0], "b": x[:, 1] - x[:, 2], "c": torch.stack([x[:, 2], -x[:, 2]], 1)}
    tasks = [Task("a", "regression"), Task("b", "regression"), Task("c", "regression", num_outputs=2)]
    torch.manual_seed(0)
    model = PerTaskModels(MultiTaskModel(nn.Linear(D, 4), tasks=tasks, out_features=4))
    stage_models = {}

    def snapshot(record):
        if record["epoch"] % 3 == 0:  # the end of a stage
            stage_models[record["curriculum"]["task"]] = copy.deepcopy(model).eval()

    trainer = Trainer(model, tasks, optimizer="adamw", lr=0.05, weight_decay=0.1, epochs=3, batch_size=16,
                      curriculum=SequentialCurriculum(model, ["a", "b", "c"], order=["a", "b", "c"], strength=0.1,
                                                      epochs_per_task=3),
                      on_epoch_end=snapshot)
    trainer.fit(MultiTaskDataset(x, targets))
    model.eval()
    with torch.no_grad():
        final = model(x)
        for name in ("a", "b", "c"):
            assert torch.equal(final[name], stage_models[name](x)[name])
        # later stages did move the shared layer: task a's copy is not the last one
        assert not torch.equal(model.members["a"].trunk.weight, model.members["c"].trunk.weight)
    # each copy trains only its shared part and its own head: K trunks plus one head each
    trunk = sum(p.numel() for p in model.members["a"].trunk.parameters())
    heads = sum(p.numel() for name in ("a", "b", "c") for p in model.members[name].heads[name].parameters())
    assert count_parameters(model) == 3 * trunk + heads  # the last stage's copy alone is trainable now
    model.activate(None)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 3 * trunk + heads


def test_resume_mid_stage_and_between_stages_equals_an_uninterrupted_run(tmp_path):
    x = _inputs()
    tasks = [Task("a", "regression"), Task("b", "regression"), Task("c", "regression")]
    data = MultiTaskDataset(x, {"a": x[:, 0], "b": x[:, 1], "c": x[:, 0] + x[:, 2]})

    def build(run_dir):
        torch.manual_seed(0)
        model = PerTaskModels(MultiTaskModel(nn.Linear(D, 4), tasks=tasks, out_features=4))
        curriculum = SequentialCurriculum(model, ["a", "b", "c"], order="auto", strength=STRENGTH,
                                          epochs_per_task=2, auto_steps=3)
        return Trainer(model, tasks, optimizer="adamw", lr=0.02, epochs=2, batch_size=16, run_dir=run_dir,
                       curriculum=curriculum)

    (tmp_path / "whole").mkdir()
    whole = build(tmp_path / "whole")
    whole.fit(data)
    for stop in (3, 4):  # in the middle of stage 2; at the end of stage 2
        run_dir = tmp_path / f"stop{stop}"
        run_dir.mkdir()
        first = build(run_dir)
        first.epochs = stop
        first.fit(data)
        state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
        assert state["curriculum"]["stage"] == 1
        resumed = build(run_dir)
        assert resumed.resume()
        resumed.fit(data)
        assert resumed.curriculum.order == whole.curriculum.order
        for (name, a), (_, b) in zip(resumed.model.state_dict().items(), whole.model.state_dict().items()):
            assert torch.equal(a, b), name


def test_keep_is_an_option_of_mode_sequential_only():
    from taskloom.config import ConfigError, CurriculumConfig, parse_config

    assert CurriculumConfig(mode="sequential", order="auto").keep == "per_task"
    assert CurriculumConfig(mode="sequential", order="auto", keep="shared").keep == "shared"
    for curriculum in ({"mode": "order", "order": ["y1"], "keep": "shared"},
                       {"mode": "sequential", "order": "auto", "keep": "both"}):
        with pytest.raises(ConfigError) as error:
            parse_config({"curriculum": curriculum})
        assert "  curriculum.keep:" in str(error.value)
