"""The tagging task kind: per-token loss over labelled tokens, padding-free gradients and metrics, label checks,
and masks derived from the inputs' lengths (no masks, per-sentence masks, mixed sources)."""
import math

import pytest
import torch
from torch import nn

from taskloom.data.batch import Batch
from taskloom.data.dataset import MultiTaskDataset
from taskloom.data.mixing import MixedLoader
from taskloom.evaluate.evaluator import evaluate_model
from taskloom.losses import masked_loss, task_losses
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


# -- masks derived from the inputs' lengths: no masks, per-sentence masks, mixed sources -----------------------

def token_nll(output, target, rows_and_tokens):
    """The mean of -log softmax(output[i, t])[target[i, t]] over the listed (sentence, token) pairs."""
    terms = [-torch.log_softmax(output[i, t], -1)[target[i, t]] for i, t in rows_and_tokens]
    return torch.stack(terms).mean()


def unmasked_tagging_data(lengths=(3, 1, 4), width=6, num_tags=4, seed=0):
    """Sentences padded to ``width`` with garbage tags (num_tags - 1) on the padding, and no masks."""
    g = torch.Generator().manual_seed(seed)
    sentences = [torch.randint(2, 20, (n,), generator=g).tolist() for n in lengths]
    tags = [torch.randint(0, num_tags - 1, (n,), generator=g).tolist() for n in lengths]
    inputs = token_inputs(sentences, length=width)
    return MultiTaskDataset(inputs, {"pos": pad_sequences(tags, width, value=num_tags - 1)})


def real_pairs(lengths, rows=None):
    rows = range(len(lengths)) if rows is None else rows
    return [(i, t) for i in rows for t in range(int(lengths[i]))]


def test_a_task_without_masks_is_trained_on_real_tokens_only():
    data = unmasked_tagging_data()  # 3 sentences of width 6: n != T
    task = tagging_task(4)
    data.validate([task])
    batch = data.batch(torch.arange(3))
    assert "pos" not in batch.masks  # the data set's default mask is one per sentence, all labelled
    output = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = task_losses({"pos": output}, batch, {"pos": task})["pos"]
    expected = token_nll(output, batch.targets["pos"], real_pairs([3, 1, 4]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert not output.grad[~length_mask(torch.tensor([3, 1, 4]), 6)].any()  # padding gets no gradient


def test_a_bare_token_tensor_gives_the_lengths_too():
    data = unmasked_tagging_data()
    tokens = data.inputs["tokens"]
    batch = Batch(tokens, {"pos": data.targets["pos"]})
    output = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(2))
    loss = task_losses({"pos": output}, batch, {"pos": tagging_task(4)})["pos"]
    assert loss.item() == pytest.approx(token_nll(output, data.targets["pos"], real_pairs([3, 1, 4])).item(), rel=1e-6)


def test_a_sentence_mask_is_spread_over_the_real_tokens():
    data = unmasked_tagging_data(lengths=(3, 1, 4, 2), width=5)
    data.masks["pos"] = torch.tensor([True, False, True, False])  # sentences 1 and 3 are untagged
    task = tagging_task(4)
    data.validate([task])
    batch = data.batch(torch.arange(4))
    assert batch.masks["pos"].shape == (4,)
    output = torch.randn(4, 5, 4, generator=torch.Generator().manual_seed(3))
    loss = task_losses({"pos": output}, batch, {"pos": task})["pos"]
    expected = token_nll(output, batch.targets["pos"], real_pairs([3, 1, 4, 2], rows=[0, 2]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_sentence_weights_weigh_each_of_their_tokens():
    data = unmasked_tagging_data(lengths=(2, 3), width=4)
    weights = torch.tensor([3.0, 1.0])
    batch = Batch(data.inputs, data.targets, {}, {"pos": weights})
    output = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(4))
    loss = task_losses({"pos": output}, batch, {"pos": tagging_task(4)})["pos"]
    nll = {(i, t): -torch.log_softmax(output[i, t], -1)[data.targets["pos"][i, t]] for i, t in real_pairs([2, 3])}
    expected = sum(weights[i] * v for (i, _), v in nll.items()) / (2 * 3.0 + 3 * 1.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_evaluation_without_masks_counts_real_tokens_only():
    task = tagging_task(2)
    inputs = token_inputs([[1, 2, 3], [4]], length=4)
    target = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]])  # padding tagged 1: counting it would change everything
    result = evaluate_model(FixedScores(), MultiTaskDataset(inputs, {"pos": target}), [task])["pos"]
    assert result["labelled"] == 4
    assert result["accuracy"] == pytest.approx(3 / 4)
    sentence_masked = MultiTaskDataset(inputs, {"pos": target}, {"pos": torch.tensor([False, True])})
    result = evaluate_model(FixedScores(), sentence_masked, [task])["pos"]
    assert result["labelled"] == 1 and result["accuracy"] == 1.0


def test_validation_checks_real_tokens_only():
    data = unmasked_tagging_data(lengths=(2, 3), width=7)
    data.targets["pos"][0, 5] = -100  # garbage on padding: fine
    data.validate([tagging_task(4)])
    data.targets["pos"][1, 2] = 9  # a real token: refused
    with pytest.raises(ValueError, match="sentence 1, token 2 is 9"):
        data.validate([tagging_task(4)])


def test_a_mask_of_another_shape_is_refused():
    data = unmasked_tagging_data()
    batch = Batch(data.inputs, data.targets, {"pos": torch.ones(3, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="per sentence"):
        task_losses({"pos": torch.zeros(3, 6, 4)}, batch, {"pos": tagging_task(4)})


@pytest.mark.parametrize("token_masks", [False, True], ids=["no-masks", "token-masks"])
def test_mixing_a_tagging_source_with_a_source_that_lacks_the_task(token_masks):
    tagged = unmasked_tagging_data(lengths=(3, 1, 4, 2, 5, 2), width=5, seed=5)
    if token_masks:  # per-token masks of the real tokens: the other source's placeholder must take their shape
        tagged = MultiTaskDataset(tagged.inputs, tagged.targets, {"pos": length_mask(tagged.inputs["lengths"], 5)})
    g = torch.Generator().manual_seed(6)
    other = MultiTaskDataset(token_inputs([torch.randint(2, 20, (n,), generator=g).tolist() for n in (2, 4, 5, 1)], 5),
                             {"length": torch.tensor([0, 1, 1, 0])})
    tasks = {"pos": tagging_task(4), "length": Task("length", "binary")}
    loader = MixedLoader({"tagged": tagged, "other": other}, batch_size=6, homogeneous=False, seed=0)
    mixed_batches = 0
    for batch in loader:
        output = torch.randn(len(batch), 5, 4, generator=g)
        mask = batch.masks.get("pos", torch.ones(len(batch), dtype=torch.bool)).reshape(len(batch), -1).any(1)
        if not mask.any():
            assert "pos" not in task_losses({"pos": output, "length": torch.zeros(len(batch), 1)}, batch, tasks)
            continue
        mixed_batches += int(not mask.all())
        loss = task_losses({"pos": output, "length": torch.zeros(len(batch), 1)}, batch, tasks)["pos"]
        rows = torch.nonzero(mask).flatten().tolist()
        expected = token_nll(output, batch.targets["pos"], real_pairs(batch.inputs["lengths"], rows))
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert mixed_batches > 0  # some batches held rows of both sources
