"""Built-in data sets, registered by name. Each loader returns :class:`~taskloom.data.DataSplits`."""
from __future__ import annotations

from typing import Any

from taskloom.data.dataset import DataSplits
from taskloom.registry import Registry

DATASETS: Registry = Registry("data set")


def load_dataset(name: str, **options: Any) -> DataSplits:
    """Load the built-in data set ``name`` with its options (tasks, split, seed, paths, ...)."""
    return DATASETS.get(name)(**options)


# each loader module registers itself on import
from taskloom.data.datasets import adult, multimnist, synthetic, table, yeast  # noqa: E402,F401
from taskloom.data.datasets import petrogold  # noqa: E402,F401

__all__ = ["DATASETS", "load_dataset"]
