"""Wall-clock bookkeeping of training runs: per-epoch seconds that survive an interruption, and inference time.

A run saves each epoch's training and analysis seconds as the epoch ends (``seconds.json``),
so a resumed run counts the epochs trained before the interruption.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from taskloom.data.dataset import BatchLoader, MultiTaskDataset

log = logging.getLogger(__name__)

TIMING_FILE = "seconds.json"


def inference_seconds(model: torch.nn.Module, data: MultiTaskDataset, batch_size: int,
                      device: str | torch.device) -> float:
    """Seconds to predict every row of ``data`` (one warm-up batch first, not timed)."""
    was_training = model.training
    model.eval()
    try:
        loader = BatchLoader(data, batch_size, shuffle=False)
        with torch.inference_mode():
            for batch in loader:
                model(batch.to(device).inputs)
                break
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            for batch in loader:
                model(batch.to(device).inputs)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started
    finally:
        model.train(was_training)


def write_json_atomically(path: Path, payload: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    os.replace(temporary, path)


def read_epoch_seconds(path: Path, before_epoch: int) -> dict[str, dict[str, float]]:
    """The saved ``{epoch: {"train": s, "analysis": s}}`` of the epochs before ``before_epoch`` (those checkpointed)."""
    if not path.is_file():
        return {}
    try:
        epochs = json.loads(path.read_text()).get("epochs", {})
    except (json.JSONDecodeError, AttributeError):
        log.warning("%s is not readable; the time of the epochs before the interruption is not counted", path)
        return {}
    return {e: {"train": float(v["train"]), "analysis": float(v.get("analysis", 0.0))}
            for e, v in epochs.items() if int(e) < before_epoch}


class EpochClock:
    """An epoch callback that saves each epoch's training and analysis seconds as the epoch ends.

    An epoch's training seconds run from the end of the previous epoch (or the start of the
    fit) to the end of this one's checkpoint, less the record's ``analysis_seconds``; the
    time spent in the wrapped callback (progress display) and in saving counts for neither.
    """

    def __init__(self, path: Path, epochs: dict[str, dict[str, float]],
                 then: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self.epochs = dict(epochs)
        self.then = then
        self.mark = time.perf_counter()

    def __call__(self, record: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self.mark
        analysis = float(record.get("analysis_seconds") or 0.0)
        self.epochs[str(record["epoch"])] = {"train": max(0.0, elapsed - analysis), "analysis": analysis}
        write_json_atomically(self.path, {"epochs": self.epochs})
        if self.then is not None:
            self.then(record)
        self.mark = time.perf_counter()

    @property
    def train_seconds(self) -> float:
        return sum(v["train"] for v in self.epochs.values())

    @property
    def analysis_seconds(self) -> float:
        return sum(v["analysis"] for v in self.epochs.values())
