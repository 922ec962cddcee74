"""Validation batches during training, for balancing methods that learn from them (``needs_validation``).

Auto-Lambda (Liu, Johns & Davison 2022) moves its task weights by the validation loss after a
lookahead step; the trainer hands such a balancer :func:`validation_losses` over the validation
split (never the test split), cycling through it in a seeded order.
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager, Iterator, Mapping

import torch
from torch import Tensor

from taskloom.data.batch import Batch
from taskloom.data.dataset import BatchLoader, MultiTaskDataset
from taskloom.losses import task_losses

#: the offset of the validation order's seed from the training seed, so the two orders differ
SEED_OFFSET = 7919


def validation_losses(val: MultiTaskDataset | Any, tasks: Mapping[str, Any], batch_size: int, seed: int,
                      device: torch.device, autocast: Callable[[], ContextManager[Any]],
                      method: str, start: int = 0) -> Callable[[Any], dict[str, Tensor]]:
    """A function of the model: the masked task losses of the next validation batch (cycling over ``val``).

    ``start`` batches already drawn (a resumed run's count) are skipped, so a resumed run sees the
    batches an uninterrupted one would.
    """
    if val is None:
        raise ValueError(f"balancing method {method} learns from validation batches during training: give the "
                         "trainer a validation split (fit(train, val); in a config, data with a validation split)")
    loader = BatchLoader(val, batch_size, seed=seed + SEED_OFFSET) if isinstance(val, MultiTaskDataset) else val
    batches = _cycle(loader, method, start)

    def losses(model: Any) -> dict[str, Tensor]:
        batch = next(batches).to(device, non_blocking=True)
        with autocast():
            return task_losses(model(batch.inputs), batch, tasks)

    return losses


def _cycle(loader: Any, method: str, start: int) -> Iterator[Batch]:
    passes, skip = divmod(start, len(loader)) if start and hasattr(loader, "__len__") and len(loader) else (0, 0)
    epoch = passes
    while True:
        epoch += 1
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        empty = True
        for position, batch in enumerate(loader):
            empty = False
            if epoch == passes + 1 and position < skip:
                continue
            yield batch
        if empty:
            raise ValueError(f"balancing method {method} needs validation batches, but the validation split is empty")
