"""Multi-task data: batches with per-task targets and masks, in-memory data sets, built-in loaders."""
from taskloom.data.batch import Batch
from taskloom.data.dataset import BatchLoader, DataSplits, MultiTaskDataset, split_indices

__all__ = ["Batch", "BatchLoader", "DataSplits", "MultiTaskDataset", "split_indices"]
