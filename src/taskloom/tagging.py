"""Token tagging: one label per token (part of speech, morphology, dependency relation), and sequence batching.

Outputs are (N, T, C) scores, targets (N, T) tag indices and masks (N, T), False on padding
and on tokens without a tag; the loss is the mean over labelled tokens (as in the taggers
of Plank et al. 2016 and Søgaard & Goldberg 2016, one softmax per token). A task without
per-token masks, or with one mask entry per sentence (what mixing gives a source that lacks
the task), is masked on the tokens of ``inputs["lengths"]``, so padding never counts.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from taskloom.evaluate import metrics as M
from taskloom.task import Task, TaskKind, register_kind

PAD_INDEX = 0
UNKNOWN_INDEX = 1


def pad_sequences(sequences: Sequence[Sequence[int]], length: int | None = None, value: int = PAD_INDEX) -> Tensor:
    """A (N, T) long tensor of the sequences, right-padded with ``value`` (and cut) to ``length``.

    ``length`` defaults to the longest sequence; padding at the end keeps token i of a
    sentence at column i, which is what packing and the per-token masks assume.
    """
    width = max((len(s) for s in sequences), default=0) if length is None else int(length)
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        cut = list(sequence)[:width]
        if cut:
            out[row, : len(cut)] = torch.as_tensor(cut, dtype=torch.long)
    return out


def length_mask(lengths: Tensor, length: int | None = None) -> Tensor:
    """(N, T) bool mask, True on the first ``lengths[i]`` positions of row i (the real tokens)."""
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    width = int(lengths.max()) if length is None and len(lengths) else int(length or 0)
    return torch.arange(width, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def token_inputs(sequences: Sequence[Sequence[int]], length: int | None = None) -> dict[str, Tensor]:
    """The inputs of a sequence data set: ``{"tokens": (N, T) ids padded with 0, "lengths": (N,)}``."""
    tokens = pad_sequences(sequences, length)
    lengths = torch.as_tensor([min(len(s), tokens.shape[1]) for s in sequences], dtype=torch.long)
    return {"tokens": tokens, "lengths": lengths}


def unpack_inputs(inputs: Any) -> tuple[Tensor, Tensor]:
    """Token ids (N, T) and lengths (N,) from sequence inputs: the dict above, or a padded id tensor.

    For a bare tensor the length of a row is the number of non-padding ids (padding only at the end).
    """
    if isinstance(inputs, dict):
        missing = [key for key in ("tokens", "lengths") if key not in inputs]
        if missing:
            raise KeyError(f"sequence inputs need the keys 'tokens' and 'lengths'; missing {missing}")
        tokens, lengths = inputs["tokens"], inputs["lengths"]
    elif isinstance(inputs, Tensor):
        tokens = inputs
        lengths = (inputs != PAD_INDEX).sum(1)
    else:
        raise TypeError(f"sequence inputs must be a dict with 'tokens' and 'lengths' or a tensor, got {type(inputs)}")
    if tokens.dim() != 2 or tokens.dtype != torch.long:
        raise ValueError(
            f"'tokens' must be a (N, T) long tensor of token ids, got {tuple(tokens.shape)} {tokens.dtype}"
        )
    if lengths.shape != tokens.shape[:1]:
        raise ValueError(f"'lengths' must have shape ({tokens.shape[0]},), got {tuple(lengths.shape)}")
    return tokens, lengths


def real_tokens(inputs: Any, width: int) -> Tensor | None:
    """(N, width) mask of the real tokens: from ``inputs["lengths"]``, or the non-padding ids of a bare
    (N, T) id tensor; None when the inputs say nothing about lengths (every token then counts)."""
    if isinstance(inputs, dict):
        lengths = inputs.get("lengths")
    elif isinstance(inputs, Tensor) and inputs.dim() == 2 and inputs.dtype == torch.long:
        lengths = (inputs != PAD_INDEX).sum(1)
    else:
        lengths = None
    if not isinstance(lengths, Tensor):
        return None
    return length_mask(lengths, width)


def token_mask(mask: Tensor | None, target: Tensor, inputs: Any) -> Tensor | None:
    """The (N, T) mask of labelled tokens: the given per-token mask, or a per-sentence (N,) one spread over
    the tokens, and with either (or with none) only the real tokens of ``inputs``."""
    shape = tuple(target.shape[:2])
    if mask is not None:
        if mask.dim() == 1 and mask.shape[0] == shape[0]:
            mask = mask.unsqueeze(1).expand(shape)
        elif tuple(mask.shape) != shape:
            raise ValueError(f"a tagging mask has one entry per sentence {shape[:1]} or per token {shape}; "
                             f"got {tuple(mask.shape)}")
    real = real_tokens(inputs, shape[1]) if target.dim() >= 2 else None
    if real is None:
        return mask
    real = real.to(target.device)
    return real if mask is None else mask & real


def _flatten(output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Scores (M, C) and targets (M,) from (N, T, C)/(N, T) or already-selected (M, C)/(M,) tensors."""
    return output.reshape(-1, output.shape[-1]), target.reshape(-1).long()


@register_kind("tagging", "one of C tags per token of a sequence; cross-entropy per token; accuracy, macro-F1")
class TaggingKind(TaskKind):
    """A tag per token: (N, T, C) outputs, (N, T) targets; padding and untagged tokens are masked out."""

    name = "tagging"
    main_metric = "accuracy"
    higher_is_better = {"accuracy": True, "macro_f1": True, "loss": False}

    def validate_task(self, task: Task) -> None:
        if task.num_outputs < 2:
            raise ValueError(f"task {task.name!r}: a tagging task needs num_outputs >= 2 (the number of tags)")
        if task.class_weights is not None and len(task.class_weights) != task.num_outputs:
            raise ValueError(
                f"task {task.name!r}: class_weights has {len(task.class_weights)} entries for {task.num_outputs} tags"
            )

    def row_loss(self, output, target, class_weights):
        scores, tags = _flatten(output, target)
        loss = F.cross_entropy(scores, tags, reduction="none").reshape(target.shape)
        weight = None if class_weights is None else class_weights[target.long()]
        return loss, weight

    def mean_loss(self, output, target, class_weights):
        scores, tags = _flatten(output, target)
        return F.cross_entropy(scores, tags, weight=class_weights)

    def unit_mask(self, mask, target, inputs):
        return token_mask(mask, target, inputs)

    def predict(self, output):
        return output.argmax(-1)

    def metrics(self, output, target, task):
        scores, tags = _flatten(output, target)
        predicted = self.predict(scores)
        return {"accuracy": M.accuracy(predicted, tags), "macro_f1": M.macro_f1(predicted, tags, task.num_outputs)}

    def check_labels(self, target, mask, task):
        if target.dim() != 2:
            raise ValueError(f"task {task.name!r}: tagging targets are (sentences, tokens) tag indices; "
                             f"got shape {tuple(target.shape)}")
        if mask.shape != target.shape[: mask.dim()]:
            raise ValueError(
                f"task {task.name!r}: mask shape {tuple(mask.shape)} does not match targets {tuple(target.shape)}; "
                "a tagging task needs one mask entry per token or per sentence"
            )
        if mask.dim() == 1:
            mask = mask.unsqueeze(1).expand(target.shape)
        values = target.double()
        invalid = (values < 0) | (values >= task.num_outputs) | (values != values.round()) | ~torch.isfinite(values)
        bad = mask & invalid
        if bool(bad.any()):
            position = tuple(int(i) for i in torch.nonzero(bad)[0])
            where = f"sentence {position[0]}, token {position[1]}" if len(position) == 2 else f"row {position[0]}"
            raise ValueError(
                f"task {task.name!r} (target {task.target!r}): tag at {where} is {target[position].item()!r}, "
                f"not a tag index in 0..{task.num_outputs - 1}; fix the data or mask the token as untagged"
            )


__all__ = [
    "PAD_INDEX", "UNKNOWN_INDEX", "TaggingKind", "length_mask", "pad_sequences", "real_tokens", "token_inputs",
    "token_mask", "unpack_inputs",
]
