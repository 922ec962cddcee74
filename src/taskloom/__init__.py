"""taskloom: multi-task learning for PyTorch."""
from taskloom.balancing import Balancer, build_balancer
from taskloom.data import Batch, BatchLoader, DataSplits, MultiTaskDataset
from taskloom.losses import masked_loss, task_losses
from taskloom.sharing import MultiTaskModel, MultiTaskModule, predict
from taskloom.task import Condition, Task
from taskloom.train.trainer import Trainer
from taskloom.serve.predictor import Predictor, load

__version__ = "0.1.0"
__all__ = [
    "Balancer", "Batch", "BatchLoader", "Condition", "DataSplits", "MultiTaskDataset", "MultiTaskModel",
    "MultiTaskModule", "Predictor", "Task", "Trainer", "build_balancer", "load", "masked_loss", "predict",
    "task_losses",
]
from taskloom import sequence_trunks, tagging  # noqa: E402,F401  (registers the tagging kind and the sequence trunks)
