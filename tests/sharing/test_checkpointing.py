"""Activation checkpointing of the shared trunk: the same step, the same running statistics, less kept."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from taskloom import MultiTaskDataset, Task
from taskloom.balancing import build_balancer
from taskloom.losses import task_losses
from taskloom.sharing import ARCHITECTURES
from taskloom.sharing.checkpointing import enable_checkpointing, run_trunk, trunk_segments
from taskloom.sharing.hard import MultiTaskModel
from taskloom.train.trainer import Trainer
from taskloom.trunks import MLP
from train._ddp_equivalence import OPTIONS, cases

ROWS = 24
TOLERANCE = 1e-6


def make_data() -> tuple[MultiTaskDataset, list[Task]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, 6, generator=generator)
    targets = {"sign": (x[:, 0] > 0).float(), "quadrant": (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long(),
               "level": 2 * x[:, 0] - x[:, 1]}
    masks = {"sign": torch.arange(ROWS) % 3 != 0, "quadrant": torch.arange(ROWS) < 15,
             "level": torch.arange(ROWS) >= 10}
    tasks = [Task("sign", "binary"), Task("quadrant", "multiclass", 4), Task("level", "regression")]
    return MultiTaskDataset(x, targets, masks), tasks


def normalized_trunk() -> nn.Sequential:
    """Two blocks of linear, batch normalization, ReLU and dropout."""
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2))


def make_trainer(name: str, mode: str | None, tasks: list[Task], checkpointing: bool, **method) -> Trainer:
    torch.manual_seed(0)
    heads = {"sign": nn.Linear(16, 1), "quadrant": nn.Linear(16, 4), "level": nn.Linear(16, 1)}
    model = MultiTaskModel(normalized_trunk(), heads=heads)
    options = {**OPTIONS.get(name, {}), **method}
    if mode is not None:
        options["mode"] = mode
    balancer = build_balancer(name, [t.name for t in tasks], **options)
    if getattr(balancer, "needs_validation", False):  # Auto-Lambda: a fixed validation batch, as a trainer would give
        validation = make_data()[0].batch(torch.arange(ROWS))
        balancer.attach_validation(lambda model: task_losses(model(validation.inputs), validation, tasks))
    return Trainer(model, tasks, balancer, optimizer="sgd", lr=0.05, momentum=0.0, batch_size=ROWS, seed=0,
                   checkpointing=checkpointing)


def state(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    parameters = list(trainer.model.parameters()) + list(trainer.balancer.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in parameters])
    buffers = torch.cat([b.detach().reshape(-1).double() for b in trainer.model.buffers()])
    return flat, buffers


def one_step(name: str, mode: str | None, checkpointing: bool, **method) -> tuple[torch.Tensor, torch.Tensor]:
    data, tasks = make_data()
    trainer = make_trainer(name, mode, tasks, checkpointing, **method)
    torch.manual_seed(1)  # the dropout masks
    trainer.train_step(data.batch(torch.arange(ROWS)))
    return state(trainer)


@pytest.mark.parametrize("name,mode", cases(), ids=[n if m is None else f"{n}/{m}" for n, m in cases()])
def test_a_checkpointed_step_equals_a_plain_one(name, mode):
    """Same parameters (dropout masks redrawn alike) and running statistics updated once, not per backward."""
    plain_parameters, plain_buffers = one_step(name, mode, checkpointing=False)
    parameters, buffers = one_step(name, mode, checkpointing=True)
    assert ((parameters - plain_parameters).abs().max() / plain_parameters.abs().max()).item() <= TOLERANCE
    assert torch.equal(buffers, plain_buffers)


def test_batch_statistics_are_updated_once_per_step():
    """With momentum m and one step from the initial (0, 1) statistics: running_mean = m * batch mean."""
    data, tasks = make_data()
    trainer = make_trainer("pcgrad", "parameters", tasks, checkpointing=True)
    batch = data.batch(torch.arange(ROWS))
    with torch.no_grad():
        first_linear = trainer.model.trunk[0](batch.inputs)
    trainer.train_step(batch)
    norm = trainer.model.trunk[1]
    assert int(norm.num_batches_tracked) == 1
    torch.testing.assert_close(norm.running_mean, 0.1 * first_linear.mean(0))


def test_vmapped_backward_falls_back_and_still_agrees():
    """Dropout recomputed inside a vmapped backward is refused by vmap; the engine goes sequential."""
    plain, _ = one_step("mgda", "parameters", checkpointing=False, batched=True)
    data, tasks = make_data()
    trainer = make_trainer("mgda", "parameters", tasks, checkpointing=True, batched=True)
    torch.manual_seed(1)
    trainer.train_step(data.batch(torch.arange(ROWS)))
    assert trainer.balancer.vmap_fallback.failed
    parameters, _ = state(trainer)
    assert ((parameters - plain).abs().max() / plain.abs().max()).item() <= TOLERANCE


def test_sequential_trunks_are_checkpointed_in_about_sqrt_blocks_segments():
    """B blocks (a parametrized layer with what follows it) in ceil(sqrt(B)) runs of consecutive blocks."""
    assert [len(segment) for segment in trunk_segments(normalized_trunk())] == [4, 4]  # 2 blocks, 2 segments
    mlp = MLP(6, hidden=(8, 8, 8))  # 3 blocks, 2 segments
    assert [[type(m).__name__ for m in s] for s in trunk_segments(mlp)] == [
        ["Flatten", "Linear", "ReLU"], ["Linear", "ReLU", "Linear", "ReLU"]]
    assert [len(segment) for segment in trunk_segments(MLP(6, hidden=(8,) * 9))] == [7, 6, 6]  # 9 blocks, 3
    custom = nn.LSTM(4, 4)
    assert trunk_segments(custom) == [[custom]]


def test_checkpointing_keeps_fewer_activations_for_backward():
    """9 blocks: the forward keeps the 9 ReLU outputs without checkpointing, the 3 segments' inputs with it
    (the input batch and 2 block outputs), everything 32 x 64 float32."""
    trunk = MLP(64, hidden=(64,) * 9)
    x = torch.randn(32, 64)
    parameters = {p.untyped_storage().data_ptr() for p in trunk.parameters()}

    def kept(enabled: bool) -> int:
        storages = {}

        def pack(tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in parameters:
                storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            run_trunk(trunk, x, enabled)
        return sum(storages.values())

    one = 32 * 64 * 4
    assert kept(False) == 10 * one  # the input and 9 ReLU outputs
    assert kept(True) <= 3 * one


def test_no_checkpointing_in_evaluation_or_without_gradients():
    trunk = MLP(6, hidden=(8,))
    x = torch.randn(3, 6)
    with torch.no_grad():
        assert torch.equal(run_trunk(trunk, x, True), trunk(x))
    trunk.eval()
    out = run_trunk(trunk, x, True)
    assert out.grad_fn is not None and "Checkpoint" not in type(out.grad_fn).__name__


@pytest.mark.parametrize("architecture,options", [
    ("hard", {}), ("hybrid", {"split": 3}), ("low_level", {"depths": {"a": 3, "b": 5}}),
    ("cascade", {}), ("mmoe", {"num_experts": 2}), ("adversarial", {"adversarial": ["b"]}),
    ("dselect_k", {"num_experts": 2}), ("dselect_k", {"gate": "input"}),
])
def test_every_architecture_with_a_shared_trunk_gives_the_same_gradients(architecture, options):
    tasks = [Task("a", "regression"), Task("b", "binary")]
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(3))
    targets = {"a": x[:, 0], "b": (x[:, 1] > 0).float()}

    def gradients(checkpointing: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = ARCHITECTURES.get(architecture)(lambda: MLP(6, hidden=(8, 8), dropout=0.1), tasks, **options)
        if checkpointing:
            enable_checkpointing(model)
        torch.manual_seed(1)
        outputs = model(x)
        loss = (outputs["a"].squeeze(-1) - targets["a"]).pow(2).mean() + nn.functional.binary_cross_entropy_with_logits(
            outputs["b"].squeeze(-1), targets["b"])
        loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])

    torch.testing.assert_close(gradients(True), gradients(False), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("architecture", ["soft", "cross_stitch", "interaction", "ple", "mtan"])
def test_architectures_without_a_shared_trunk_are_refused(architecture):
    tasks = [Task("a", "regression"), Task("b", "regression")]
    model = ARCHITECTURES.get(architecture)(lambda: MLP(6, hidden=(8, 8)), tasks)
    with pytest.raises(ValueError, match="model.checkpointing: .* cannot checkpoint activations"):
        enable_checkpointing(model)


def test_a_config_refuses_checkpointing_an_architecture_without_a_trunk():
    from taskloom.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="model.checkpointing: architecture soft cannot checkpoint"):
        parse_config({"model": {"architecture": "soft", "checkpointing": True}})
    assert parse_config({"model": {"checkpointing": True}}).model.checkpointing


CONFIG = """\
name: tiny
data:
  dataset: synthetic
  options: {{n: 400}}
model:
  trunk: {{name: mlp, options: {{hidden: [16, 16], dropout: 0.1}}}}
  checkpointing: {checkpointing}
balancing: {{method: pcgrad}}
optimizer: {{name: sgd, lr: 0.05}}
train: {{epochs: 2, batch_size: 32, seed: 0}}
output_dir: {output}
"""


def _test_metrics(folder, checkpointing: bool) -> dict:
    import json

    from taskloom.cli import main

    folder.mkdir()
    config = folder / "tiny.yaml"
    config.write_text(CONFIG.format(checkpointing=str(checkpointing).lower(), output=folder / "runs"))
    assert main(["train", str(config)]) == 0
    (run,) = list((folder / "runs").iterdir())
    (results,) = list(run.glob("*/seed0/results.json"))
    return json.loads(results.read_text())["test"]


def test_taskloom_train_with_checkpointing_gives_the_same_test_metrics(tmp_path):
    checkpointed = _test_metrics(tmp_path / "checkpointed", True)
    plain = _test_metrics(tmp_path / "plain", False)
    for task, metrics in plain.items():
        for name, value in metrics.items():
            assert checkpointed[task][name] == pytest.approx(value, rel=1e-6, abs=1e-9), (task, name)


@pytest.mark.parametrize("name,options", [("bilstm", {"hidden_size": 4}),
                                          ("transformer", {"num_heads": 2, "feedforward": 8})])
def test_sequence_trunks_tapped_layer_by_layer_give_the_same_gradients(name, options):
    """Low-level supervision and the cascade read every layer of a sequence trunk: one checkpointed segment."""
    from taskloom.sharing.checkpointing import run_layer_outputs
    from taskloom.trunks import TRUNKS

    def gradients(enabled: bool) -> torch.Tensor:
        torch.manual_seed(0)
        trunk = TRUNKS.get(name)(vocab_size=20, embedding_dim=8, **options)
        tokens = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
        torch.manual_seed(1)  # dropout
        outputs = run_layer_outputs(trunk, tokens, enabled)
        sum(output.pow(2).sum() for output in outputs).backward()
        return torch.cat([p.grad.reshape(-1) for p in trunk.parameters() if p.grad is not None])

    torch.testing.assert_close(gradients(True), gradients(False), rtol=1e-6, atol=1e-7)
