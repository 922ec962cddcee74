"""Wall-clock bookkeeping of training runs: per-epoch seconds that survive an interruption, and inference time.

A run saves each epoch's training and analysis seconds as the epoch ends (``seconds.json``),
so a resumed run counts the epochs trained before the interruption; an epoch whose seconds
were not saved (the process was killed after its checkpoint) is taken from its
``metrics.jsonl`` record.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from taskloom.data.dataset import BatchLoader, MultiTaskDataset
from taskloom.train.faults import fault_point
from taskloom.train.json_files import write_json_atomically

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


def read_epoch_seconds(path: Path, before_epoch: int) -> dict[str, dict[str, float]]:
    """The saved ``{epoch: {"train": s, "analysis": s}}`` of the epochs before ``before_epoch`` (those checkpointed).

    An epoch missing from ``path`` (killed between its checkpoint and the save of its seconds)
    gets the seconds of its record in ``metrics.jsonl`` beside ``path``, so the total never drifts.
    """
    saved: dict[str, Any] = {}
    if path.is_file():
        try:
            saved = json.loads(path.read_text()).get("epochs", {})
        except (json.JSONDecodeError, AttributeError):
            log.warning("%s is not readable; the time of the epochs before the interruption is taken from "
                        "metrics.jsonl", path)
            saved = {}
    epochs = {e: {"train": float(v["train"]), "analysis": float(v.get("analysis", 0.0))}
              for e, v in saved.items() if int(e) < before_epoch and v.get("train") is not None}
    missing = {str(e) for e in range(1, before_epoch)} - set(epochs)
    if missing:
        for record in _records(path.with_name("metrics.jsonl")):
            epoch = str(record.get("epoch"))
            if epoch in missing and record.get("seconds") is not None:
                epochs[epoch] = {"train": float(record["seconds"]),
                                 "analysis": float(record.get("analysis_seconds") or 0.0)}
    return epochs


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class EpochClock:
    """An epoch callback that saves each epoch's training and analysis seconds as the epoch ends.

    An epoch's training seconds run from the end of the previous epoch (or the start of the
    fit) to the end of this one's checkpoint, less the record's ``analysis_seconds``; the
    time spent in the wrapped callback (progress display) and in saving counts for neither.
    """

    def __init__(self, path: Path, then: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self.epochs: dict[str, dict[str, float]] = {}
        self.then = then
        self.mark = time.perf_counter()

    def start(self, first_epoch: int) -> None:
        """Start timing at ``first_epoch``, keeping the saved seconds of the epochs before it (a resume)."""
        self.epochs = read_epoch_seconds(self.path, first_epoch)
        self.mark = time.perf_counter()

    def __call__(self, record: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self.mark
        analysis = float(record.get("analysis_seconds") or 0.0)
        epoch = int(record["epoch"])
        self.epochs[str(epoch)] = {"train": max(0.0, elapsed - analysis), "analysis": analysis}
        write_json_atomically(self.path, {"epochs": self.epochs},
                              before_rename=lambda: fault_point("write_seconds", epoch, str(self.path.parent)))
        if self.then is not None:
            self.then(record)
        self.mark = time.perf_counter()

    @property
    def train_seconds(self) -> float:
        return sum(v["train"] for v in self.epochs.values())

    @property
    def analysis_seconds(self) -> float:
        return sum(v["analysis"] for v in self.epochs.values())
