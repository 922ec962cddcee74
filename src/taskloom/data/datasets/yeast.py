"""Yeast multi-label gene functions (2,417 genes, 103 features, 14 labels) from the river package.

By default each label is its own binary task (``class1`` .. ``class14``, the CSV's column
names lower-cased); ``multilabel=True`` gives one 14-output multilabel task ``labels``.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from taskloom.data.dataset import DataSplits
from taskloom.data.datasets import DATASETS
from taskloom.data.features import given_report
from taskloom.data.stratify import split_for_tasks
from taskloom.data.table import check_columns, encode_target, frame_splits, resolve_tasks, row_namer
from taskloom.task import Task


def yeast_path(path: str | Path | None = None) -> Path:
    """The gzipped CSV: ``path`` if given, else the copy shipped in ``river``."""
    if path is None:
        try:
            from river.datasets import Yeast
        except ImportError as error:
            raise FileNotFoundError(
                "Yeast needs the package river (pip install river) or the option path=yeast.csv.gz"
            ) from error
        path = Yeast().path
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Yeast: {path} does not exist")
    return path


def sanitize(name: str) -> str:
    return re.sub(r"[^0-9a-z_]+", "_", name.strip().lower()).strip("_")


def read_yeast(path: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The table with sanitized column names, its feature columns and its label columns."""
    frame = pd.read_csv(path)
    frame.columns = [sanitize(c) for c in frame.columns]
    labels = [c for c in frame.columns if c.startswith("class")]
    features = [c for c in frame.columns if c not in labels]
    if not labels:
        raise ValueError(f"Yeast: no label columns (named Class...) in {path}; columns are {list(frame.columns)}")
    return frame, features, labels


@DATASETS.register("yeast", "Yeast gene functions: 14 binary labels over 103 features (river)")
def load_yeast(
    tasks: Sequence[Task] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    multilabel: bool = False,
    path: str | Path | None = None,
    stratify: bool = True,
) -> DataSplits:
    """Seeded splits of Yeast with features standardized on train; a task's target names a label column.

    Splits are stratified on the labels (iterative stratification over all tasks, Sechidis et al. 2011)
    unless ``stratify`` is False.

    Options:
        multilabel: one 14-output multilabel task instead of 14 binary tasks
        path: the gzipped CSV; default the copy in the package river
        stratify: stratify the split on every label; False: random rows
    """
    source = yeast_path(path)
    frame, features, labels = read_yeast(source)

    def defaults() -> list[Task]:
        if multilabel:
            return [Task("labels", "multilabel", num_outputs=len(labels), target="labels", label_names=labels)]
        return [Task(name, "binary", target=name) for name in labels]

    chosen = resolve_tasks(tasks, defaults)
    name_row = row_namer(frame, str(source))
    info: dict[str, Any] = {"source": str(source), "label_columns": labels}
    targets, masks = {}, {}
    for task in chosen:
        if task.kind == "multilabel" and task.target == "labels":
            if task.num_outputs != len(labels):
                raise ValueError(f"task {task.name!r}: the multilabel Yeast target has {len(labels)} outputs, "
                                 f"not {task.num_outputs}")
            targets[task.name] = torch.from_numpy(frame[labels].to_numpy(dtype=np.float32))
            masks[task.name] = torch.ones(len(frame), dtype=torch.bool)
            continue
        renamed = replace(task, target=sanitize(task.target or task.name))
        check_columns(frame[labels], [renamed])
        targets[task.name], masks[task.name] = encode_target(renamed, frame[renamed.target], name_row, info)
    train, val, test = split_for_tasks(chosen, targets, masks, val_fraction, test_fraction, seed, stratify)
    parts = {"train": train.numpy(), "val": val.numpy(), "test": test.numpy()}
    info["stratified"] = stratify
    return frame_splits(frame, chosen, parts, targets, masks, features, [], name_row, info=info,
                        feature_report=given_report(features, [], "a Yeast feature"))
