"""Relative change against single-task baselines and the multi-task score delta-m (Maninis et al. 2019)."""
from __future__ import annotations

from typing import Collection, Mapping


def relative_change(value: float, baseline: float, higher_is_better: bool) -> float:
    """Signed relative change in percent: positive means better than the baseline."""
    if baseline == 0:
        raise ValueError("the relative change against a baseline of 0 is undefined")
    sign = 1.0 if higher_is_better else -1.0
    return 100.0 * sign * (value - baseline) / abs(baseline)


def delta_m(
    values: Mapping[str, float],
    baselines: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
    auxiliary: Collection[str] = (),
) -> float:
    """Mean over tasks of the signed relative change against the single-task baseline, in percent.

    Delta-m = (1/K) sum_k (-1)^{l_k} (M_k - M_b,k) / M_b,k x 100, where l_k = 1 when lower
    is better for task k (Maninis et al. 2019, "Attentive single-tasking of multiple tasks").
    Tasks named in ``auxiliary`` are left out: delta-m is over the main tasks.
    """
    baselines = {name: value for name, value in baselines.items() if name not in auxiliary}
    if not baselines:
        raise ValueError("delta-m needs at least one main task; every task is auxiliary")
    missing = [name for name in baselines if name not in values]
    if missing:
        raise ValueError(f"no value for tasks {missing}")
    changes = [relative_change(values[n], baselines[n], higher_is_better[n]) for n in baselines]
    return sum(changes) / len(changes)
