"""Sequence trunks for token tagging: a stacked BiLSTM and a small transformer encoder.

Both read ``{"tokens": (N, T), "lengths": (N,)}`` and return per-token features (N, T, F),
zero on padding, with ``layer_outputs(inputs)`` giving every layer's features so that heads
can read lower layers (low-level supervision, Søgaard & Goldberg 2016).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from taskloom.tagging import PAD_INDEX, UNKNOWN_INDEX, length_mask, unpack_inputs
from taskloom.trunks import TRUNKS


class TokenEmbedding(nn.Module):
    """Token id embeddings with padding index 0 and optional word dropout.

    Word dropout replaces a known token by the unknown id with probability ``word_dropout``
    during training, so the model learns what to do with unseen words (Kiperwasser & Goldberg 2016).
    """

    def __init__(self, vocab_size: int, embedding_dim: int, word_dropout: float = 0.0) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must count padding (0) and unknown (1) and be at least 2, got {vocab_size}")
        if not 0 <= word_dropout < 1:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout}")
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_INDEX)
        self.word_dropout = word_dropout

    def forward(self, tokens: Tensor) -> Tensor:
        if self.training and self.word_dropout > 0:
            drop = (torch.rand(tokens.shape, device=tokens.device) < self.word_dropout) & (tokens > UNKNOWN_INDEX)
            tokens = torch.where(drop, UNKNOWN_INDEX, tokens)
        return self.embedding(tokens)


@TRUNKS.register("bilstm", "stacked bidirectional LSTM over token embeddings; (N, T, 2*hidden) per-token features")
class BiLSTM(nn.Module):
    """A stack of ``num_layers`` bidirectional LSTMs (one ``nn.LSTM`` each, so every layer's output is reachable).

    Sequences are packed by length, so padding never reaches a real token's state in either
    direction (Graves & Schmidhuber 2005; the BiLSTM taggers of Plank et al. 2016).
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 100,
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.25,
        word_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.embed = TokenEmbedding(vocab_size, embedding_dim, word_dropout)
        self.lstms = nn.ModuleList(
            nn.LSTM(embedding_dim if i == 0 else 2 * hidden_size, hidden_size, batch_first=True, bidirectional=True)
            for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.num_layers = num_layers
        self.out_features = 2 * hidden_size
        self.layer_features = [2 * hidden_size] * num_layers

    def layer_outputs(self, inputs: Any) -> list[Tensor]:
        """Each layer's per-token output (N, T, 2*hidden), zero on padding, after dropout."""
        tokens, lengths = unpack_inputs(inputs)
        total = tokens.shape[1]
        packed = pack_padded_sequence(
            self.dropout(self.embed(tokens)), lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
        )
        empty = (lengths == 0).view(-1, 1, 1)
        outputs = []
        for lstm in self.lstms:
            packed, _ = lstm(packed)
            packed = packed._replace(data=self.dropout(packed.data))
            padded, _ = pad_packed_sequence(packed, batch_first=True, total_length=total)
            outputs.append(torch.where(empty, 0.0, padded))
        return outputs

    def forward(self, inputs: Any) -> Tensor:
        return self.layer_outputs(inputs)[-1]

    def parameter_depths(self) -> list[tuple[list[nn.Parameter], int]]:
        """Parameter groups with the first layer whose output they change (for heads tapped lower)."""
        groups = [(list(self.embed.parameters()), 1)]
        return groups + [(list(lstm.parameters()), i + 1) for i, lstm in enumerate(self.lstms)]


@TRUNKS.register("transformer", "small transformer encoder with learned positions and a key padding mask")
class TransformerTrunk(nn.Module):
    """A pre-norm transformer encoder (Vaswani et al. 2017) over token plus learned position embeddings.

    The key padding mask keeps padding out of every real token's attention; each batch is cut
    to its longest sentence before encoding and padded back, so padding costs no attention.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        feedforward: int = 256,
        dropout: float = 0.1,
        max_positions: int = 512,
        word_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if embedding_dim % num_heads:
            raise ValueError(f"embedding_dim ({embedding_dim}) must be a multiple of num_heads ({num_heads})")
        self.embed = TokenEmbedding(vocab_size, embedding_dim, word_dropout)
        self.positions = nn.Embedding(max_positions, embedding_dim)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.encoders = nn.ModuleList(
            nn.TransformerEncoderLayer(
                embedding_dim, num_heads, feedforward, dropout, batch_first=True, norm_first=True
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.max_positions = max_positions
        self.num_layers = num_layers
        self.out_features = embedding_dim
        self.layer_features = [embedding_dim] * num_layers

    def layer_outputs(self, inputs: Any) -> list[Tensor]:
        """Each layer's per-token output (N, T, embedding_dim), zero on padding.

        Every layer's residual stream goes through the one final layer norm of the pre-norm encoder.
        """
        tokens, lengths = unpack_inputs(inputs)
        total = tokens.shape[1]
        width = max(int(lengths.max()), 1) if len(lengths) else 1
        if width > self.max_positions:
            raise ValueError(
                f"a sentence has {width} tokens but the transformer trunk has max_positions={self.max_positions}; "
                "raise the trunk option max_positions or lower the data option max_length"
            )
        tokens = tokens[:, :width]
        real = length_mask(lengths, width)
        positions = torch.arange(width, device=tokens.device)
        ignored = ~(real | ((lengths == 0).unsqueeze(1) & (positions == 0)))
        x = self.dropout(self.embed(tokens) + self.positions(positions))
        outputs = []
        for encoder in self.encoders:
            x = encoder(x, src_key_padding_mask=ignored)
            out = torch.where(real.unsqueeze(-1), self.norm(x), 0.0)
            outputs.append(nn.functional.pad(out, (0, 0, 0, total - width)))
        return outputs

    def forward(self, inputs: Any) -> Tensor:
        return self.layer_outputs(inputs)[-1]

    def parameter_depths(self) -> list[tuple[list[nn.Parameter], int]]:
        """Parameter groups with the first layer whose output they change (the final norm reads every layer)."""
        groups = [([*self.embed.parameters(), *self.positions.parameters(), *self.norm.parameters()], 1)]
        return groups + [(list(encoder.parameters()), i + 1) for i, encoder in enumerate(self.encoders)]


__all__ = ["BiLSTM", "TokenEmbedding", "TransformerTrunk"]
