"""The trainer's named choices, defined once: the config's fields and the trainer both check against these."""
from __future__ import annotations

from typing import Sequence

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("none", "cosine", "step")
AMP_MODES = ("none", "bf16", "fp16")


def check_choice(field: str, value: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; else a ValueError naming the config field and the choices."""
    if value not in choices:
        raise ValueError(f"{field} must be one of {', '.join(choices)}; got {value!r}")
    return value
