"""Built-in auxiliary tasks that need no extra labels.

``feature``: an input column withheld from the model and predicted instead (Caruana 1997, "Multitask
learning", features used as outputs); a regression feature is predicted in standardized units (training
mean and std), so its loss has the scale of the others whatever the column's unit. ``reconstruct``: predict
the standardized inputs from the shared representation; with ``mask`` a seeded fraction of each training row's inputs is zeroed at the input
(denoising autoencoders, Vincent et al. 2008; masked autoencoders, He et al. 2022). The reconstruction
loss covers every input (the denoising form), not only the masked ones.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import Tensor

from taskloom.data.dataset import DataSplits, MultiTaskDataset
from taskloom.task import Task

log = logging.getLogger(__name__)


def feature_task(column: str, kind: str = "regression", num_outputs: int = 1, name: str | None = None) -> Task:
    """The auxiliary task predicting the withheld table column ``column``."""
    outputs = num_outputs if kind == "multiclass" else 1
    return Task(name or f"aux_feature_{column}", kind, num_outputs=outputs, target=column, role="auxiliary")


def withheld_features(features: Sequence[str] | None, columns: Sequence[str]) -> list[str] | None:
    """``features`` (the table's listed feature columns, None: inferred) without the withheld ``columns``."""
    if features is None:
        return None  # a task's target column is never inferred as a feature
    return [c for c in features if c not in set(columns)]


def standardize_feature_target(splits: DataSplits, name: str) -> None:
    """Standardize the regression targets of the feature auxiliary ``name`` in every split by the mean and std
    of its labelled training rows (a constant column is only centred); the statistics go to ``splits.info``."""
    targets, masks = splits.train.targets[name], splits.train.masks[name]
    labelled = targets[masks].double()
    if len(labelled) == 0:
        raise ValueError(f"auxiliaries: the feature of task {name!r} has no value in the training rows")
    mean = float(labelled.mean())
    std = float(labelled.std(unbiased=False))
    scale = std if std > 0 else 1.0
    for split in ("train", "val", "test"):
        data: MultiTaskDataset = getattr(splits, split)
        data.targets[name] = ((data.targets[name].double() - mean) / scale).to(data.targets[name].dtype)
    info: dict[str, Any] = splits.info.setdefault("auxiliaries", {})
    info[name] = {"kind": "feature", "standardized": {"mean": mean, "scale": scale}}


def standardize(inputs: Tensor, reference: Tensor) -> Tensor:
    """``inputs`` flattened per row and standardized by the per-column mean and std of ``reference``.

    A column that is constant in ``reference`` is only centred (scale 1).
    """
    flat = inputs.reshape(len(inputs), -1).float()
    ref = reference.reshape(len(reference), -1).float()
    mean = ref.mean(dim=0)
    std = ref.std(dim=0, unbiased=False) if len(ref) > 1 else torch.zeros_like(mean)
    scale = torch.where(std > 0, std, torch.ones_like(std))
    return (flat - mean) / scale


def input_mask(shape: Sequence[int], ratio: float, seed: int) -> Tensor:
    """A boolean mask of ``shape`` (rows, ...) with exactly ``round(ratio * entries)`` True entries per row,
    chosen uniformly at random from ``seed``."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"auxiliaries: mask must lie in [0, 1), got {ratio}")
    rows, entries = int(shape[0]), int(torch.Size(shape[1:]).numel())
    count = int(round(ratio * entries))
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(rows, entries, generator=generator).argsort(dim=1)
    mask = torch.zeros(rows, entries, dtype=torch.bool)
    mask.scatter_(1, order[:, :count], True)
    return mask.reshape(tuple(shape))


def add_reconstruction(splits: DataSplits, mask: float = 0.0, seed: int = 0,
                       name: str = "aux_reconstruct") -> Task:
    """Add the task ``name`` to ``splits``: targets the standardized (training statistics) unmasked inputs.

    With ``mask`` > 0, that fraction of each training row's inputs is set to zero (seeded); validation and
    test inputs are left whole, as served rows are. Returns the added task.
    """
    inputs = splits.train.inputs
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
        raise ValueError("auxiliaries: reconstruct needs inputs that are one float tensor (tables, images); "
                         "this data set's inputs are token ids or a mapping: remove the reconstruct auxiliary")
    if name in splits.train.targets:
        raise ValueError(f"auxiliaries: the data set already has a task {name!r}")
    reference = inputs
    width = int(reference[0].numel()) if len(reference) else 0
    task = Task(name, "regression", num_outputs=width, role="auxiliary")
    for split in ("train", "val", "test"):
        data: MultiTaskDataset = getattr(splits, split)
        data.targets[name] = standardize(data.inputs, reference)
        data.masks[name] = torch.ones(len(data), dtype=torch.bool)
    if mask > 0:
        hidden = input_mask(tuple(inputs.shape), mask, seed)
        splits.train.inputs = torch.where(hidden, torch.zeros((), dtype=inputs.dtype), inputs)
        log.info("reconstruct auxiliary: %d of %d inputs of each training row are zeroed (seed %d)",
                 int(hidden[0].sum()) if len(hidden) else 0, width, seed)
    splits.tasks = [*splits.tasks, task]
    info: dict[str, Any] = splits.info.setdefault("auxiliaries", {})
    info[name] = {"kind": "reconstruct", "mask": mask, "seed": seed, "outputs": width}
    return task
