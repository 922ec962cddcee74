"""Several data sets in one run: each source is labelled for some of the tasks (UberNet, Kokkinos 2017).

``combine_sources`` turns per-source splits into one :class:`DataSplits` whose train,
validation and test sets hold every task (rows of a source that lacks a task are
unlabelled for it), and keeps each source's training rows for :class:`MixedLoader`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from taskloom.data.dataset import DataSplits, MultiTaskDataset
from taskloom.data.mixing import MixedLoader, align_tasks
from taskloom.task import Task


def concat_datasets(parts: Sequence[MultiTaskDataset]) -> MultiTaskDataset:
    """The rows of ``parts`` one after another; all parts must hold the same tasks and input shape."""
    first = parts[0]
    if isinstance(first.inputs, dict):
        inputs: Any = {k: torch.cat([p.inputs[k] for p in parts]) for k in first.inputs}
    else:
        inputs = torch.cat([p.inputs for p in parts])
    names = first.task_names
    weighted = {n for p in parts for n in p.weights}
    return MultiTaskDataset(
        inputs,
        {n: torch.cat([p.targets[n] for p in parts]) for n in names},
        {n: torch.cat([p.masks[n] for p in parts]) for n in names},
        {n: torch.cat([p.weights.get(n, torch.ones(len(p))) for p in parts]) for n in weighted},
    )


def _check_same_tasks(sources: Mapping[str, DataSplits]) -> list[Task]:
    """The union of the sources' tasks, refusing a task name that means different things in two sources."""
    tasks: dict[str, tuple[str, Task]] = {}
    for source, splits in sources.items():
        for task in splits.tasks:
            if task.name in tasks:
                other_source, other = tasks[task.name]
                if (other.kind, other.num_outputs) != (task.kind, task.num_outputs):
                    raise ValueError(
                        f"task {task.name!r} is {other.kind} with {other.num_outputs} outputs in source "
                        f"{other_source!r} but {task.kind} with {task.num_outputs} in source {source!r}; "
                        "rename one of them"
                    )
            else:
                tasks[task.name] = (source, task)
    return [task for _, task in tasks.values()]


def combine_sources(sources: Mapping[str, DataSplits]) -> DataSplits:
    """One :class:`DataSplits` over every source's tasks; ``info['train_sources']`` keeps the sources apart."""
    if not sources:
        raise ValueError("data.sources is empty; list at least one source")
    shapes = {name: tuple(s.input_shape) for name, s in sources.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"data.sources: one model needs one input shape, but the sources give {shapes}")
    tasks = _check_same_tasks(sources)
    names = [t.name for t in tasks]
    split_sets = {}
    for split in ("train", "val", "test"):
        own = {s: align_tasks({s: getattr(d, split)}, [t.name for t in d.tasks])[s] for s, d in sources.items()}
        aligned = align_tasks(own, names)
        split_sets[split] = aligned
    first = next(iter(sources.values()))
    info = {"train_sources": split_sets["train"], "sources": {s: len(d.train) for s, d in sources.items()}}
    info.update({k: v for k, v in first.info.items() if k == "trunk_arguments"})
    return DataSplits(
        train=concat_datasets(list(split_sets["train"].values())),
        val=concat_datasets(list(split_sets["val"].values())),
        test=concat_datasets(list(split_sets["test"].values())),
        tasks=tasks,
        input_shape=first.input_shape,
        info=info,
    )


def mixed_loader(splits: DataSplits, task_names: Sequence[str], batch_size: int, seed: int, epochs: int,
                 **mixing: Any) -> MixedLoader:
    """A :class:`MixedLoader` over the training sources that label any of ``task_names``."""
    sources = {
        name: data for name, data in splits.info["train_sources"].items()
        if any(bool(data.masks[t].any()) for t in task_names)
    }
    if not sources:
        raise ValueError(f"no source labels any of the tasks {list(task_names)}")
    given = mixing.get("probabilities")
    if given is not None:
        mixing = {**mixing, "probabilities": {s: p for s, p in given.items() if s in sources}}
    return EpochCountedLoader(align_tasks(sources, task_names), batch_size, seed=seed, epochs=epochs, **mixing)


class EpochCountedLoader(MixedLoader):
    """A :class:`MixedLoader` told epochs 1..E as the trainer counts them (the mixing schedule counts from 0)."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(max(epoch - 1, 0))
