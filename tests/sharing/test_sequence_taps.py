"""Low-level supervision and the cascade on sequence trunks, tapped by layer number (layer_outputs)."""
from __future__ import annotations

import pytest
import torch

from taskloom.data.batch import Batch
from taskloom.losses import task_losses
from taskloom.sequence_trunks import BiLSTM, TransformerTrunk
from taskloom.sharing import build_cascade, build_low_level
from taskloom.tagging import length_mask, token_inputs
from taskloom.task import Task

VOCAB = 12


def tasks() -> list[Task]:
    return [Task("upos", "tagging", 5), Task("feats", "tagging", 4), Task("deprel", "tagging", 3)]


def bilstm(num_layers: int = 2) -> BiLSTM:
    return BiLSTM(VOCAB, embedding_dim=6, hidden_size=5, num_layers=num_layers, dropout=0.0)


def transformer() -> TransformerTrunk:
    return TransformerTrunk(VOCAB, embedding_dim=8, num_heads=2, num_layers=2, feedforward=16, dropout=0.0)


def batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    lengths = [5, 3, 4, 1]
    inputs = token_inputs([torch.randint(2, VOCAB, (n,), generator=g).tolist() for n in lengths], length=6)
    mask = length_mask(inputs["lengths"], 6)
    targets = {t.name: torch.randint(0, t.num_outputs, (4, 6), generator=g) for t in tasks()}
    return Batch(inputs=inputs, targets=targets, masks={n: mask for n in targets}, weights={})


def reached_by(model, b: Batch) -> dict[int, set[str]]:
    parameters = [p for p in model.parameters() if p.requires_grad]
    losses = task_losses(model(b.inputs), b, {t.name: t for t in tasks()})
    reached: dict[int, set[str]] = {id(p): set() for p in parameters}
    for name, loss in losses.items():
        for p, g in zip(parameters, torch.autograd.grad(loss, parameters, allow_unused=True, retain_graph=True)):
            if g is not None and bool(g.abs().sum() > 0):
                reached[id(p)].add(name)
    return reached


@pytest.mark.parametrize("trunk", [bilstm, transformer])
@pytest.mark.parametrize("builder", ["low_level", "cascade"])
def test_roles_follow_the_layer_each_head_taps(trunk, builder):
    torch.manual_seed(0)
    build = build_low_level if builder == "low_level" else build_cascade
    model = build(trunk, tasks(), depths={"upos": 1})
    reached = reached_by(model, batch())
    assert all(reached.values())
    assert {id(p) for p in model.shared_parameters()} == {i for i, r in reached.items() if len(r) > 1}
    for name in model.task_names:
        assert {id(p) for p in model.task_parameters(name)} == {i for i, r in reached.items() if r == {name}}


def test_a_head_at_layer_one_reads_the_first_bilstm_layer_and_not_the_second():
    torch.manual_seed(0)
    model = build_low_level(bilstm, tasks(), depths={"upos": 1})
    b = batch()
    first, second = model.trunk.layer_outputs(b.inputs)
    outputs = model(b.inputs)
    assert torch.equal(outputs["upos"], model.heads["upos"](first))
    assert torch.equal(outputs["deprel"], model.heads["deprel"](second))
    upos = task_losses(outputs, b, {t.name: t for t in tasks()})["upos"]
    grads = torch.autograd.grad(upos, list(model.trunk.lstms[1].parameters()), allow_unused=True)
    assert all(g is None for g in grads)


def test_the_cascade_passes_per_token_label_embeddings_up():
    torch.manual_seed(0)
    model = build_cascade(bilstm, tasks(), depths={"upos": 1}, embedding_dim=3)
    b = batch()
    outputs, read = model.head_inputs(b.inputs)
    upos = torch.softmax(outputs["upos"], -1) @ model.embeddings["upos"]
    assert read["feats"].shape == (4, 6, 10 + 3) and read["deprel"].shape == (4, 6, 10 + 6)
    assert torch.allclose(read["feats"][..., 10:], upos) and torch.allclose(read["deprel"][..., 10:13], upos)
    with torch.no_grad():
        model.heads["upos"].weight[0].add_(1.0)  # one tag's row: a shift of every row leaves the softmax as is
    after = model(b.inputs)
    assert not torch.allclose(after["feats"], outputs["feats"])
    assert not torch.allclose(after["deprel"], outputs["deprel"])


def test_taps_are_validated_against_the_trunk_layers():
    with pytest.raises(ValueError, match="low_level.depths.upos"):
        build_low_level(bilstm, tasks(), depths={"upos": 3})
    with pytest.raises(ValueError, match="num_layers to 1"):
        build_cascade(bilstm, tasks(), depths={"upos": 1, "feats": 1, "deprel": 1})
    assert build_low_level(lambda: bilstm(1), tasks()).tap_widths == {1: 10}


@pytest.mark.parametrize("builder", ["low_level", "cascade"])
def test_a_gradient_method_trains_every_parameter_through_the_trainer(builder):
    from taskloom.balancing import build_balancer
    from taskloom.data.dataset import MultiTaskDataset
    from taskloom.train.trainer import Trainer

    torch.manual_seed(0)
    build = build_low_level if builder == "low_level" else build_cascade
    model = build(bilstm, tasks(), depths={"upos": 1})
    b = batch()
    data = MultiTaskDataset(b.inputs, b.targets, b.masks)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(model, tasks(), build_balancer("pcgrad", model.task_names), lr=0.01, epochs=1, batch_size=4)
    trainer.fit(data)
    assert [n for n, p in model.named_parameters() if torch.equal(p, before[n])] == []
