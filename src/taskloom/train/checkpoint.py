"""Checkpoints written atomically (temporary file, then rename) and read with ``weights_only=True``.

A checkpoint that cannot be read (truncated, not a checkpoint, or holding objects the safe
unpickler refuses) raises :class:`CheckpointError`, which names the file and never suggests an
unsafe load. :func:`check_run_checkpoints` reads every checkpoint of a run directory before a
resume does any work, and :func:`remove_orphan_temporaries` deletes the temporary files a killed
write left behind.
"""
from __future__ import annotations

import logging
import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("model", "next_epoch", "task_names")


class CheckpointError(ValueError):
    """A checkpoint file that is truncated, not a taskloom checkpoint, or unsafe to load."""


def save_checkpoint(state: dict[str, Any], path: str | Path,
                    before_rename: Callable[[], None] | None = None) -> Path:
    """Write ``state`` to ``path`` so that a crash never leaves a partial file behind.

    ``before_rename`` is called once the temporary file is complete, just before it replaces
    ``path`` (a fault-injection point for crash tests).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a taskloom checkpoint with the safe unpickler (tensors and plain containers only).

    Raises :class:`CheckpointError` naming the file when it is truncated, not a checkpoint, or
    holds objects the safe unpickler refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; is this the run directory of a started run?")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only load failed" in str(error).lower():
            raise CheckpointError(
                f"checkpoint {path} is unsafe: it holds Python objects other than tensors and plain containers, "
                "so taskloom refuses to load it (taskloom never writes such a file). Delete it, or replace it with "
                "the checkpoint the run wrote, then resume again") from None
        raise CheckpointError(_corrupt(path, error)) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, IndexError,
            KeyError, TypeError) as error:
        raise CheckpointError(_corrupt(path, error)) from None
    if not isinstance(state, dict) or any(key not in state for key in CHECKPOINT_KEYS):
        found = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path} is not a taskloom training checkpoint (it lacks "
                              f"{', '.join(CHECKPOINT_KEYS)}; found {found}). Delete it or restore the file the "
                              "run wrote, then resume again")
    return state


def _corrupt(path: Path, error: BaseException) -> str:
    text = str(error).strip().splitlines()[0].split(". ")[0][:160] if str(error).strip() else ""
    first_line = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return (f"checkpoint {path} is corrupt: it is truncated or not a PyTorch checkpoint ({first_line}). "
            "Delete it (the model then trains again from its previous checkpoint, or from the start) "
            "or restore it from a copy, then resume again")


def check_run_checkpoints(run_dir: str | Path) -> list[Path]:
    """Read every checkpoint a resume of ``run_dir`` may load (``last.pt``, ``best.pt``, ``best-<task>.pt``).

    Called before a resume does any work, so that a bad file is reported at once, by name, and
    not after hours of training other models. A model directory holding ``results.json`` is
    finished (a compare cell): a resume never loads its checkpoints, so they are not read.
    Returns the checkpoints read.
    """
    paths = [path for path in sorted(Path(run_dir).rglob("checkpoints/*.pt"))
             if not (path.parent.parent / "results.json").is_file() or path.parent.parent == Path(run_dir)]
    for path in paths:
        load_checkpoint(path)
    return paths


def is_orphan_temporary(path: Path) -> bool:
    """A temporary file of taskloom's atomic writes (``.NAME....tmp``), left behind by a killed write."""
    return path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file()


def remove_orphan_temporaries(directory: str | Path, recursive: bool = True) -> list[Path]:
    """Delete the temporary files killed atomic writes left in ``directory`` (a run resumes only when no
    other process writes there); returns what was deleted."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    candidates = directory.rglob(".*.tmp") if recursive else directory.glob(".*.tmp")
    removed = [path for path in candidates if is_orphan_temporary(path)]
    for path in removed:
        path.unlink(missing_ok=True)
        log.info("removed %s, the temporary file of a write that was interrupted", path)
    return removed


def rng_state() -> dict[str, Any]:
    """The state of every random generator a training step may use, in weights-only-safe types."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
