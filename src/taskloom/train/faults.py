"""Fault injection for crash tests: kill the process with SIGKILL at a named point of a training run.

Set ``TASKLOOM_FAULT=POINT:EPOCH`` (or ``POINT:EPOCH@MODEL`` to pick a model whose name
contains ``MODEL``, e.g. ``after_log:2@single``) and the process dies, without any cleanup,
the first time it reaches ``POINT`` in epoch ``EPOCH``. Unset, a point costs one environment
lookup. The points, in the order an epoch reaches them:

- ``step``: after the epoch's first optimizer step;
- ``write_best``, ``write_last``: inside the write of ``best.pt`` / ``last.pt``, after the temporary
  file is complete and before it is renamed over the checkpoint;
- ``after_log``: after the epoch's record is appended to ``metrics.jsonl``, before ``last.pt`` is saved;
- ``after_last``: after ``last.pt`` is saved, before the epoch's seconds are saved;
- ``write_seconds``: inside the write of ``seconds.json``, before its temporary file is renamed.

The run is then resumed with ``--resume``; ``tests/train/test_kill_resume.py`` checks the result.
"""
from __future__ import annotations

import os
import signal

FAULT_VARIABLE = "TASKLOOM_FAULT"
POINTS = ("step", "write_best", "write_last", "after_log", "after_last", "write_seconds")


def fault_point(point: str, epoch: int, model: str = "") -> None:
    """SIGKILL this process if ``TASKLOOM_FAULT`` names ``point`` at ``epoch`` (and a part of ``model``)."""
    wanted = os.environ.get(FAULT_VARIABLE)
    if not wanted:
        return
    where, _, model_part = wanted.partition("@")
    name, _, at = where.partition(":")
    if name not in POINTS:
        raise ValueError(f"{FAULT_VARIABLE}={wanted!r}: unknown point {name!r}; points are {', '.join(POINTS)}")
    if name == point and at == str(epoch) and model_part in model:
        os.kill(os.getpid(), signal.SIGKILL)
