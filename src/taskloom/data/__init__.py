"""Multi-task data: batches with per-task targets and masks, in-memory data sets, built-in loaders, mixing."""
from taskloom.data.batch import Batch
from taskloom.data.dataset import BatchLoader, DataSplits, MultiTaskDataset, split_indices
from taskloom.data.mixing import MixedLoader, align_tasks, source_probabilities
from taskloom.data.sources import combine_sources, concat_datasets

__all__ = [
    "Batch", "BatchLoader", "DataSplits", "MixedLoader", "MultiTaskDataset", "align_tasks", "combine_sources",
    "concat_datasets", "source_probabilities", "split_indices",
]
