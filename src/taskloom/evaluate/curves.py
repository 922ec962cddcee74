"""Learning-curve signals of single-task training (Bingel & Sogaard 2017, "Identifying beneficial task relations").

They found gains from multi-task learning more likely when the main task's single-task
learning curve flattens early (it plateaus after few iterations, perhaps in a poor local
minimum) while the auxiliary tasks' curves keep improving (they do not plateau): the slopes
and plateau epochs below, of each task and of the others beside it, show that pattern.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7)


@dataclass
class CurveSignals:
    """Slopes of the loss curve at fractions of training, and the epoch where it plateaus.

    ``slopes[f]`` is the change in loss per epoch at fraction ``f`` of training (negative:
    still improving); ``relative_slopes[f]`` divides it by the first epoch's loss so tasks
    with different loss scales compare. ``plateau_epoch`` is 1-based.
    """

    slopes: dict[float, float]
    relative_slopes: dict[float, float]
    plateau_epoch: int
    epochs: int


def curve_signals(
    losses: Sequence[float], fractions: Sequence[float] = FRACTIONS, plateau_threshold: float = 0.01
) -> CurveSignals:
    """Signals of one per-epoch training-loss curve (epoch 1 first).

    Slope at fraction f: the central finite-difference derivative (``numpy.gradient``) of
    the curve, linearly interpolated at epoch index f x (E - 1). Plateau: the first epoch e
    after which the loss never falls by more than ``plateau_threshold`` (relative) below
    its value at e, i.e. (L_e - min_{e' > e} L_e') < threshold x |L_e|; the last epoch if none.
    """
    curve = np.asarray(losses, dtype=float)
    if curve.ndim != 1 or len(curve) < 2:
        raise ValueError(f"a loss curve needs at least 2 epochs, got {len(curve)}")
    if not np.all(np.isfinite(curve)):
        raise ValueError("the loss curve has NaN or infinite values; signals need a finite curve")
    for f in fractions:
        if not 0 <= f <= 1:
            raise ValueError(f"fractions must lie in [0, 1], got {f}")
    derivative = np.gradient(curve)
    index = np.arange(len(curve))
    slopes = {float(f): float(np.interp(f * (len(curve) - 1), index, derivative)) for f in fractions}
    scale = abs(curve[0]) if curve[0] != 0 else 1.0
    relative = {f: s / scale for f, s in slopes.items()}
    later_min = np.minimum.accumulate(curve[::-1])[::-1]
    plateau = len(curve)
    for e in range(len(curve) - 1):
        if curve[e] - later_min[e + 1] < plateau_threshold * abs(curve[e]):
            plateau = e + 1
            break
    return CurveSignals(slopes, relative, plateau, len(curve))


def auxiliary_signals(
    signals: Mapping[str, CurveSignals], fraction: float = 0.5
) -> dict[str, dict[str, Any]]:
    """Per task, the other tasks' (its auxiliaries') plateau epochs and their mean relative slope at ``fraction``.

    Returns ``{task: {"plateaus": {other: epoch}, "epochs": {other: epochs}, "slope": mean or None}}``;
    ``slope`` is None when no other task has a slope at ``fraction``.
    """
    out = {}
    for task in signals:
        others = [o for o in signals if o != task]
        slopes = [signals[o].relative_slopes[fraction] for o in others if fraction in signals[o].relative_slopes]
        out[task] = {"plateaus": {o: signals[o].plateau_epoch for o in others},
                     "epochs": {o: signals[o].epochs for o in others},
                     "slope": float(np.mean(slopes)) if slopes else None}
    return out


def single_task_curves(records: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Per task, the training-loss curve of its single-task model (records of metrics.jsonl)."""
    curves: dict[str, dict[int, float]] = {}
    for record in records:
        model = str(record.get("model", ""))
        if not model.startswith("single/"):
            continue
        task = model.split("/", 1)[1]
        value = (record.get("train_loss") or {}).get(task)
        if value is not None:
            curves.setdefault(task, {})[int(record["epoch"])] = float(value)
    return {task: [by_epoch[e] for e in sorted(by_epoch)] for task, by_epoch in curves.items()}


def curve_table(
    records: Iterable[Mapping[str, Any]],
    gains: Mapping[str, float | None] | None = None,
    fractions: Sequence[float] = FRACTIONS,
    plateau_threshold: float = 0.01,
) -> dict[str, dict[str, Any]]:
    """Per task: curve signals of its single-task run next to its multi-task gain (relative change, %)."""
    table = {}
    for task, curve in single_task_curves(records).items():
        if len(curve) < 2:
            continue
        signals = curve_signals(curve, fractions, plateau_threshold)
        table[task] = {"signals": signals, "gain": None if gains is None else gains.get(task)}
    return table
