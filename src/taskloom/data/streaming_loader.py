"""Training batches streamed from a :class:`~taskloom.data.streaming.StreamingTable`, one rank or several.

Data parallelism: the table's *pieces* (a Parquet row group, or a whole CSV file, which cannot be
entered in the middle) are dealt round robin to the ranks, and each rank reads only its own
pieces (the statistics pass still reads every row on every rank). A rank's batch is its share of
the global batch (the in-memory path's slice sizes), cut from its own rows; all ranks take the
same number of steps, that of the rank with the fewest batches, so each epoch leaves out at most
a few batches' tail rows of the other ranks. The global batch is therefore a different random
draw from the training rows than one process makes (one process, with a shuffle buffer at least
as large as the training split, gives exactly the in-memory path's batches).
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from taskloom.data.batch import Batch
from taskloom.data.dataset import MultiTaskDataset
from taskloom.data.hash_split import TRAIN
from taskloom.data.sources import concat_datasets
from taskloom.data.streaming import StreamingTable


def shard_size(rows: int, rank: int, world_size: int) -> int:
    """Rank ``rank``'s share of ``rows`` (the in-memory path's contiguous slice sizes)."""
    return rows * (rank + 1) // world_size - rows * rank // world_size


def rank_pieces(pieces: int, rank: int, world_size: int) -> list[int]:
    """The pieces rank ``rank`` reads: every ``world_size``-th one from ``rank`` (round robin)."""
    return list(range(rank, pieces, world_size))


class StreamingLoader:
    """Batches of a :class:`StreamingTable`'s training rows, shuffled through a buffer, reproducible from (seed, epoch).

    Each epoch reads the pieces in a seeded order and fills a buffer of ``shuffle_buffer`` rows;
    a full buffer is put back in table order and permuted with ``torch.randperm`` from a
    generator seeded ``seed * 100003 + epoch`` (as :class:`~taskloom.data.dataset.BatchLoader`
    does), and batches are cut from the permuted rows. A buffer at least as large as the training
    split therefore gives exactly the in-memory batches; a smaller one mixes rows within windows
    of ``shuffle_buffer`` rows (the piece order is shuffled too). ``shard`` gives one rank's loader.
    """

    def __init__(self, table: StreamingTable, batch_size: int, seed: int, shuffle_buffer: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1 or shuffle_buffer < 1:
            raise ValueError("batch_size and shuffle_buffer must be at least 1")
        if table.encoder is None:
            raise ValueError("the table has no statistics yet: call StreamingTable.fit() first")
        self.table, self.batch_size, self.seed, self.shuffle_buffer = table, batch_size, seed, shuffle_buffer
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.pieces = rank_pieces(len(table.pieces), rank, world_size)
        self.local_batch = shard_size(batch_size, rank, world_size)
        if self.local_batch < 1:
            raise ValueError(f"train.batch_size {batch_size} is smaller than the {world_size} processes; "
                             "each process needs at least one row per batch")
        steps = self._steps_per_rank()
        self.steps = min(steps)
        if self.steps == 0:
            raise ValueError(f"{table.source}: a process has no training rows: with {world_size} processes the "
                             f"table needs at least {world_size} pieces (Parquet row groups or CSV files), it has "
                             f"{len(table.pieces)}; write it with smaller row groups or in more files")

    def _steps_per_rank(self) -> list[int]:
        total = len(self.table.pieces)
        return [math.ceil(sum(self.table.piece_train_rows[i] for i in rank_pieces(total, r, self.world_size))
                          / shard_size(self.batch_size, r, self.world_size)) for r in range(self.world_size)]

    def shard(self, rank: int, world_size: int) -> "StreamingLoader":
        """The loader of rank ``rank`` of ``world_size``: it reads only its own pieces (module docstring)."""
        loader = StreamingLoader(self.table, self.batch_size, self.seed, max(1, self.shuffle_buffer // world_size),
                                 rank, world_size)
        loader.epoch = self.epoch
        return loader

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def _blocks(self, generator: torch.Generator) -> Iterator[MultiTaskDataset]:
        order = np.random.default_rng([self.seed, self.epoch, self.rank]).permutation(self.pieces)
        held: list[tuple[MultiTaskDataset, np.ndarray]] = []
        rows = 0
        for index, positions, frame in self.table.chunks([int(i) for i in order], self.table.needed_columns):
            train = self.table.split_codes(frame, positions) == TRAIN
            if not train.any():
                continue
            held.append(self.table.encoded_rows(frame, positions, train, index))
            rows += int(train.sum())
            if rows >= self.shuffle_buffer:
                yield self._shuffled(held, generator)
                held, rows = [], 0
        if held:
            yield self._shuffled(held, generator)

    @staticmethod
    def _shuffled(held: list[tuple[MultiTaskDataset, np.ndarray]], generator: torch.Generator) -> MultiTaskDataset:
        data = concat_datasets([d for d, _ in held])
        in_table_order = np.argsort(np.concatenate([p for _, p in held]), kind="stable")
        data = data.subset(torch.from_numpy(in_table_order))
        return data.subset(torch.randperm(len(data), generator=generator))

    def __iter__(self) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        size, emitted = self.local_batch, 0
        pending: MultiTaskDataset | None = None
        for block in self._blocks(generator):
            pending = block if pending is None else concat_datasets([pending, block])
            full = len(pending) // size
            for i in range(full):
                if emitted == self.steps:
                    return
                yield pending.batch(torch.arange(i * size, (i + 1) * size))
                emitted += 1
            pending = pending.subset(torch.arange(full * size, len(pending)))
        if pending is not None and len(pending) and emitted < self.steps:
            yield pending.batch(torch.arange(len(pending)))


__all__ = ["StreamingLoader", "rank_pieces", "shard_size"]
