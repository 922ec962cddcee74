"""Sequence trunks: per-token (N, T, F) features that padding cannot reach."""
import pytest
import torch

from taskloom.sequence_trunks import BiLSTM, TransformerTrunk
from taskloom.tagging import token_inputs
from taskloom.trunks import TRUNKS

SENTENCES = [[2, 3, 4, 5, 6, 7], [8, 9, 2], [10]]


def build(name, **options):
    torch.manual_seed(0)
    if name == "bilstm":
        return BiLSTM(vocab_size=12, embedding_dim=8, hidden_size=5, num_layers=2, dropout=0.3, **options)
    return TransformerTrunk(vocab_size=12, embedding_dim=8, num_heads=2, num_layers=2, feedforward=16,
                            dropout=0.3, max_positions=16, **options)


@pytest.mark.parametrize("name", ["bilstm", "transformer"])
def test_registered_and_shapes(name):
    assert name in TRUNKS
    trunk = build(name).eval()
    inputs = token_inputs(SENTENCES, length=9)
    features = trunk(inputs)
    assert features.shape == (3, 9, trunk.out_features)
    layers = trunk.layer_outputs(inputs)
    assert len(layers) == trunk.num_layers == 2
    assert [x.shape[-1] for x in layers] == trunk.layer_features
    torch.testing.assert_close(layers[-1], features)
    for x in layers:
        assert not x[0, 6:].any() and not x[1, 3:].any() and not x[2, 1:].any()
        assert x[1, :3].abs().sum(-1).gt(0).all()


@pytest.mark.parametrize("name", ["bilstm", "transformer"])
def test_padding_does_not_reach_real_tokens(name):
    trunk = build(name).eval()
    batch = token_inputs(SENTENCES, length=11)
    batch["tokens"][batch["tokens"] == 0] = 11  # garbage ids in the padding
    padded = trunk.layer_outputs(batch)
    for row, words in enumerate(SENTENCES):
        alone = trunk.layer_outputs(token_inputs([words]))
        for layer_padded, layer_alone in zip(padded, alone):
            torch.testing.assert_close(layer_padded[row, : len(words)], layer_alone[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["bilstm", "transformer"])
def test_every_parameter_gets_a_gradient(name):
    trunk = build(name).train()
    trunk(token_inputs(SENTENCES)).sum().backward()
    for pname, parameter in trunk.named_parameters():
        assert parameter.grad is not None, pname
    assert not trunk.embed.embedding.weight.grad[0].any()  # padding embedding stays untouched


def test_word_dropout_only_in_training():
    trunk = build("bilstm", word_dropout=0.5)
    trunk.eval()
    inputs = token_inputs(SENTENCES)
    torch.testing.assert_close(trunk(inputs), trunk(inputs))
    tokens = torch.full((4, 50), 5)
    torch.manual_seed(0)
    trunk.embed.train()
    dropped = trunk.embed(tokens)
    unknown = trunk.embed.embedding.weight[1]
    share = (dropped == unknown).all(-1).float().mean().item()
    assert 0.35 < share < 0.65


def test_empty_sentence_gives_zero_features():
    for name in ("bilstm", "transformer"):
        trunk = build(name).eval()
        out = trunk(token_inputs([[2, 3], []], length=3))
        assert torch.isfinite(out).all() and not out[1].any()


def test_transformer_refuses_sentences_longer_than_its_positions():
    trunk = build("transformer")
    with pytest.raises(ValueError, match="max_positions=16"):
        trunk(token_inputs([list(range(2, 12)) * 2]))


def test_inputs_must_be_token_ids():
    trunk = build("bilstm")
    with pytest.raises(KeyError, match="lengths"):
        trunk({"tokens": torch.zeros(2, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match="long tensor"):
        trunk({"tokens": torch.zeros(2, 3), "lengths": torch.ones(2, dtype=torch.long)})
