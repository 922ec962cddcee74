"""Strict JSON for the run directory: a non-finite float (NaN, infinity) is written as null.

Python's ``json`` writes bare ``NaN`` and ``Infinity`` by default, which strict parsers (and
JavaScript) refuse; every file taskloom writes goes through :func:`to_json` instead.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable


def finite_or_null(payload: Any) -> Any:
    """``payload`` with every non-finite float (also inside lists, tuples and dicts) replaced by None."""
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {key: finite_or_null(value) for key, value in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [finite_or_null(value) for value in payload]
    return payload


def to_json(payload: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``payload``: non-finite floats become null; never a bare NaN or Infinity."""
    return json.dumps(finite_or_null(payload), indent=indent, allow_nan=False)


def write_json_atomically(path: Path, payload: Any, before_rename: Callable[[], None] | None = None) -> None:
    """Write strict JSON to a temporary file beside ``path`` and rename it: a reader never sees half a file.

    ``before_rename`` is called once the temporary file is complete (a fault-injection point).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(to_json(payload, indent=2))
    if before_rename is not None:
        before_rename()
    os.replace(temporary, path)
