"""Micro-batching: concurrent requests share one forward pass.

Requests queue their encoded rows; one worker takes what is queued (under load, that is when
other requests wait too or the last batch held several, it waits at most ``max_wait`` seconds
for more while under ``max_rows``; a lone request is not kept waiting), runs one forward pass
in a worker thread, and hands each request its slice. The queue is bounded: a full queue refuses at once
(:class:`Overloaded`), so a burst gets a quick "try again" instead of an ever longer wait.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

Forward = Callable[[Tensor], dict[str, np.ndarray]]


class Overloaded(RuntimeError):
    """The queue of pending requests is full."""


class MicroBatcher:
    """Collects up to ``max_rows`` rows (or for ``max_wait`` seconds), runs ``forward`` once, splits the answers."""

    def __init__(self, forward: Forward, max_rows: int = 256, max_wait: float = 0.002, max_pending: int = 256) -> None:
        if max_rows < 1 or max_pending < 1 or max_wait < 0:
            raise ValueError("max_rows and max_pending must be at least 1, max_wait at least 0")
        self.forward, self.max_rows, self.max_wait, self.max_pending = forward, max_rows, max_wait, max_pending
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.batches = 0
        self.rows = 0
        self.last_requests = 0

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.max_pending)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskloom-forward")
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.worker = self.executor = None

    @property
    def pending(self) -> int:
        return 0 if self.queue is None else self.queue.qsize()

    async def submit(self, inputs: Tensor) -> dict[str, np.ndarray]:
        """The forward's outputs for ``inputs`` (rows of one request); :class:`Overloaded` when the queue is full."""
        if self.queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((inputs, future))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.max_pending} requests are already waiting") from None
        return await future

    async def _collect(self) -> list[tuple[Tensor, asyncio.Future]]:
        assert self.queue is not None
        items = [await self.queue.get()]
        rows = len(items[0][0])
        loop = asyncio.get_running_loop()
        busy = not self.queue.empty() or self.last_requests > 1  # alone, a request is not kept waiting
        deadline = loop.time() + (self.max_wait if busy else 0.0)
        while rows < self.max_rows:
            if self.queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            else:
                item = self.queue.get_nowait()
            items.append(item)
            rows += len(item[0])
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            self.last_requests = len(items)
            live = [(x, f) for x, f in items if not f.cancelled()]  # a client that left needs no answer
            if not live:
                continue
            inputs = torch.cat([x for x, _ in live]) if len(live) > 1 else live[0][0]
            try:
                outputs = await loop.run_in_executor(self.executor, self.forward, inputs)
            except Exception as error:  # answer every waiting request rather than leave it hanging
                log.exception("forward pass failed on a batch of %d rows", len(inputs))
                for _, future in live:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            self.rows += len(inputs)
            start = 0
            for x, future in live:
                stop = start + len(x)
                if not future.done():
                    future.set_result({name: value[start:stop] for name, value in outputs.items()})
                start = stop

    def stats(self) -> dict[str, Any]:
        return {"batches": self.batches, "rows": self.rows, "pending": self.pending,
                "mean_rows_per_batch": self.rows / self.batches if self.batches else None}
