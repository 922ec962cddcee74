"""The tagging task kind: per-token loss over labelled tokens, padding-free gradients and metrics, label checks."""
import math

import pytest
import torch
from torch import nn

from taskloom.data.dataset import MultiTaskDataset
from taskloom.evaluate.evaluator import evaluate_model
from taskloom.losses import masked_loss
from taskloom.sequence_trunks import BiLSTM
from taskloom.sharing import MultiTaskModel
from taskloom.tagging import length_mask, pad_sequences, token_inputs, unpack_inputs
from taskloom.task import TASK_KINDS, Task


def tagging_task(num_tags=3, **options):
    return Task("pos", "tagging", num_outputs=num_tags, **options)


def test_registered_and_validated():
    assert "tagging" in TASK_KINDS
    with pytest.raises(ValueError, match="num_outputs >= 2"):
        Task("pos", "tagging", num_outputs=1)
    with pytest.raises(ValueError, match="2 entries for 3 tags"):
        tagging_task(class_weights=[1.0, 2.0])


def test_padding_helpers():
    tokens = pad_sequences([[5, 6, 7], [8], []], length=4)
    assert tokens.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [0, 0, 0, 0]]
    assert pad_sequences([[1, 2, 3]], length=2).tolist() == [[1, 2]]
    mask = length_mask(torch.tensor([3, 1, 0]), 4)
    assert mask.tolist() == [[True, True, True, False], [True, False, False, False], [False] * 4]
    inputs = token_inputs([[5, 6, 7], [8]], length=2)
    assert inputs["lengths"].tolist() == [2, 1]
    tokens, lengths = unpack_inputs(inputs["tokens"])
    assert lengths.tolist() == [2, 1]


def test_loss_is_mean_of_token_cross_entropy_over_labelled_tokens():
    torch.manual_seed(0)
    output = torch.randn(3, 5, 4)
    target = torch.randint(0, 4, (3, 5))
    mask = length_mask(torch.tensor([5, 2, 4]), 5)
    mask[0, 1] = False  # an untagged token inside a sentence
    target[~mask] = 77  # garbage where there is no label: must not matter
    terms = [
        -torch.log_softmax(output[i, t], -1)[target[i, t]]
        for i in range(3) for t in range(5) if mask[i, t]
    ]
    expected = torch.stack(terms).mean()
    loss = masked_loss(tagging_task(4), output, target, mask)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_class_weighted_loss_matches_weighted_mean():
    output = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([[0, 1, 2], [2, 2, 0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    weights = torch.tensor([1.0, 2.0, 0.5])
    task = tagging_task(3, class_weights=weights.tolist())
    nll = -torch.log_softmax(output, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    w = weights[target] * mask
    assert masked_loss(task, output, target, mask).item() == pytest.approx(((nll * w).sum() / w.sum()).item(), rel=1e-6)


def test_padding_does_not_change_the_gradient():
    torch.manual_seed(0)
    task = tagging_task(5)
    model = MultiTaskModel(BiLSTM(vocab_size=20, embedding_dim=8, hidden_size=6, num_layers=2, dropout=0.0), [task])
    sentences = [[3, 4, 5], [6, 7, 8, 9, 10], [11]]
    tags = [[0, 1, 2], [3, 4, 0, 1, 2], [4]]

    padded = token_inputs(sentences, length=7)
    padded["tokens"][padded["tokens"] == 0] = 19  # whatever sits in padding must not matter
    target = pad_sequences(tags, 7, value=3)
    mask = length_mask(padded["lengths"], 7)
    model.zero_grad()
    masked_loss(task, model(padded)[task.name], target, mask).backward()
    with_padding = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    total_tokens = sum(len(s) for s in sentences)
    for words, labels in zip(sentences, tags):
        alone = token_inputs([words])
        output = model(alone)[task.name][0]
        loss = nn.functional.cross_entropy(output, torch.tensor(labels), reduction="sum") / total_tokens
        loss.backward()
    for got, want in zip(with_padding, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_no_labelled_token_gives_zero_loss_and_gradient():
    output = torch.randn(2, 3, 4, requires_grad=True)
    nothing = torch.zeros(2, 3, dtype=torch.bool)
    loss = masked_loss(tagging_task(4), output, torch.zeros(2, 3, dtype=torch.long), nothing)
    loss.backward()
    assert loss.item() == 0 and not output.grad.any()


def test_predict_and_metrics_on_tokens():
    kind = TASK_KINDS.get("tagging")
    output = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]])
    assert kind.predict(output).tolist() == [[0, 1, 0]]
    target = torch.tensor([[0, 0, 0]])
    both = kind.metrics(output, target, tagging_task(2))
    flat = kind.metrics(output.reshape(-1, 2), target.reshape(-1), tagging_task(2))
    assert both == flat
    assert both["accuracy"] == pytest.approx(2 / 3)
    # class 0: tp 2, fp 0, fn 1 -> F1 0.8; class 1: tp 0, fp 1, fn 0 -> F1 0
    assert both["macro_f1"] == pytest.approx(0.4)


class FixedScores(nn.Module):
    """Predicts tag 1 on real tokens and tag 0 on padding, whatever the labels."""

    def forward(self, inputs):
        tokens, lengths = unpack_inputs(inputs)
        real = length_mask(lengths, tokens.shape[1])
        return {"pos": torch.stack([(~real).float(), real.float()], -1)}


def test_evaluation_ignores_padding():
    task = tagging_task(2)
    inputs = token_inputs([[1, 2, 3], [4]], length=4)
    mask = length_mask(inputs["lengths"], 4)
    target = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])  # padding labelled 0 = what the model "predicts" there
    data = MultiTaskDataset(inputs, {"pos": target}, {"pos": mask})
    result = evaluate_model(FixedScores(), data, [task])["pos"]
    assert result["labelled"] == 4
    assert result["accuracy"] == pytest.approx(3 / 4)
    expected_loss = (3 * math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 4
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_check_labels_names_sentence_and_token():
    kind = TASK_KINDS.get("tagging")
    task = tagging_task(3)
    target = torch.tensor([[0, 1, 2, 9], [0, 2, 5, 0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    with pytest.raises(ValueError, match=r"'pos'.*sentence 1, token 2 is 5"):
        kind.check_labels(target, mask, task)
    mask[1, 2] = False
    kind.check_labels(target, mask, task)  # bad tags only where masked: fine
    with pytest.raises(ValueError, match="one mask entry per token"):
        kind.check_labels(target, mask[:, :2], task)
