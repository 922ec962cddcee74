"""Task grouping from an affinity matrix: TAG's network selection (Fifty et al. 2021), solved exactly.

Choose at most B groups of tasks (a task may sit in several groups) so that every task is
served by one of them, maximizing the sum over tasks of the affinity a task receives in
the group that serves it best.

Method. A group G gives task t in G the score s(G, t) = mean over u in G, u != t of
Z[u->t] (``reduce="mean"``, TAG's normalization, so a group is not rewarded for size
alone; ``reduce="sum"`` gives the plain total); a task alone scores 0 (no transfer). In an
optimal choice the sets of tasks each group serves partition the tasks, so the problem is
a set partition: best(S) = max over groups G containing S of sum_{t in S} s(G, t), then
F_b(U) = max(F_{b-1}(U), max over S in U holding U's first task of best(S) + F_{b-1}(U \\ S)).
Both steps enumerate every (subset, sub-subset) pair once: O(3^K) with numpy, exact
(equal to exhaustive search over all choices of B groups), about a second for K = 14.

A pair never measured (two tasks that never shared a batch) is refused unless
``allow_missing``; then it is left out of the means, so it neither helps nor hurts a group
(a task none of whose group-mates' affinity onto it was measured scores 0, as alone).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

MAX_TASKS = 16


@dataclass
class Grouping:
    """The chosen groups (task names), the total score, and which group serves each task."""

    groups: list[list[str]]
    score: float
    served_by: dict[str, int] = field(default_factory=dict)
    task_scores: dict[str, float] = field(default_factory=dict)


def missing_pairs(
    affinity: Mapping[str, Mapping[str, float | None]], task_names: Sequence[str]
) -> list[tuple[str, str]]:
    """The ordered pairs ``(from, onto)`` of distinct tasks with no finite affinity value."""
    out = []
    for a in task_names:
        for b in task_names:
            value = (affinity.get(a) or {}).get(b)
            if a != b and (value is None or not np.isfinite(value)):
                out.append((a, b))
    return out


def _as_matrix(
    affinity: Mapping[str, Mapping[str, float | None]] | np.ndarray, task_names: Sequence[str] | None,
    allow_missing: bool = False,
) -> tuple[np.ndarray, list[str]]:
    if isinstance(affinity, Mapping):
        names = list(task_names or affinity)
        missing = missing_pairs(affinity, names)
        if missing and not allow_missing:
            raise ValueError(f"affinity has no value for task pairs {missing[:5]}; measure them or drop the tasks")
        unmeasured = set(missing)
        z = np.array([[0.0 if a == b else np.nan if (a, b) in unmeasured else float(affinity[a][b]) for b in names]
                      for a in names])
    else:
        z = np.asarray(affinity, dtype=float)
        if task_names is None:
            raise ValueError("give task_names with an affinity array")
        names = list(task_names)
    if z.shape != (len(names), len(names)):
        raise ValueError(f"affinity must be {len(names)} x {len(names)} for tasks {names}, got {z.shape}")
    off = z[~np.eye(len(names), dtype=bool)]
    if np.isinf(off).any() or (np.isnan(off).any() and not allow_missing):
        raise ValueError("affinity has NaN or infinite entries off the diagonal; measure every pair first")
    return z, names


def _bits(width: int) -> np.ndarray:
    return ((np.arange(1 << width)[:, None] >> np.arange(width)) & 1).astype(np.int64)


def group_scores(z: np.ndarray, members: Sequence[int], reduce: str = "mean") -> np.ndarray:
    """s(G, t) for each t in ``members``: the affinity onto t from its group-mates (mean or sum; NaN left out)."""
    m = list(members)
    if len(m) == 1:
        return np.zeros(1)
    sub = np.array(z[np.ix_(m, m)], dtype=float)
    np.fill_diagonal(sub, np.nan)
    measured = np.isfinite(sub)
    onto = np.where(measured, sub, 0.0).sum(axis=0)
    if reduce != "mean":
        return onto
    count = measured.sum(axis=0)
    return np.where(count > 0, onto / np.maximum(count, 1), 0.0)


def select_groups(
    affinity: Mapping[str, Mapping[str, float | None]] | np.ndarray,
    networks: int,
    task_names: Sequence[str] | None = None,
    reduce: str = "mean",
    allow_missing: bool = False,
) -> Grouping:
    """The best choice of at most ``networks`` groups for the affinity ``{i: {j: Z[i->j]}}``.

    Exact for up to 16 tasks (see the module docstring for the method, and for ``allow_missing``).
    """
    z, names = _as_matrix(affinity, task_names, allow_missing)
    k = len(names)
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if networks < 1:
        raise ValueError(f"networks must be at least 1, got {networks}")
    if k == 0:
        raise ValueError("no tasks to group")
    if k > MAX_TASKS:
        raise ValueError(f"exact grouping handles up to {MAX_TASKS} tasks, got {k}; group a subset of the tasks")
    full = (1 << k) - 1
    bits = [_bits(w) for w in range(k + 1)]
    best = np.full(1 << k, -np.inf)
    best_group = np.zeros(1 << k, dtype=np.int64)
    for group in range(1, full + 1):
        members = [t for t in range(k) if group >> t & 1]
        local = bits[len(members)][1:]
        sums = local @ group_scores(z, members, reduce)
        subsets = local @ (1 << np.array(members, dtype=np.int64))
        better = sums > best[subsets]
        best[subsets[better]] = sums[better]
        best_group[subsets[better]] = group

    levels = [best]
    choice: list[np.ndarray] = [np.zeros(1 << k, dtype=np.int64)]
    for _ in range(2, min(networks, k) + 1):
        previous = levels[-1]
        current = previous.copy()
        picked = np.zeros(1 << k, dtype=np.int64)
        for u in range(1, full + 1):
            members = [t for t in range(k) if u >> t & 1]
            if len(members) < 2:
                continue
            rest_bits = bits[len(members) - 1][:-1]
            others = np.array(members[1:], dtype=np.int64)
            subsets = (1 << members[0]) + rest_bits @ (1 << others)
            values = best[subsets] + previous[u ^ subsets]
            at = int(np.argmax(values))
            if values[at] > current[u]:
                current[u] = values[at]
                picked[u] = subsets[at]
        levels.append(current)
        choice.append(picked)

    served_sets = []
    u, level = full, len(levels) - 1
    while u:
        while level > 0 and choice[level][u] == 0:
            level -= 1
        s = int(choice[level][u]) if level > 0 else u
        served_sets.append(s)
        u ^= s
        level -= 1
    groups_masks: list[int] = []
    served_by: dict[str, int] = {}
    task_scores: dict[str, float] = {}
    for s in served_sets:
        group = int(best_group[s])
        if group not in groups_masks:
            groups_masks.append(group)
        members = [t for t in range(k) if group >> t & 1]
        scores = group_scores(z, members, reduce)
        for t in range(k):
            if s >> t & 1:
                served_by[names[t]] = groups_masks.index(group)
                task_scores[names[t]] = float(scores[members.index(t)])
    groups = [[names[t] for t in range(k) if g >> t & 1] for g in groups_masks]
    score = float(levels[-1][full])
    log.info("grouping of %d tasks into %d networks: %s (score %.4f)", k, networks, groups, score)
    return Grouping(groups, score, served_by, task_scores)


def grouping_score(
    affinity: Mapping[str, Mapping[str, float | None]] | np.ndarray,
    groups: Sequence[Sequence[str]],
    task_names: Sequence[str] | None = None,
    reduce: str = "mean",
    allow_missing: bool = False,
) -> float:
    """TAG's objective of a given choice of groups: each task's best score over the groups holding it."""
    z, names = _as_matrix(affinity, task_names, allow_missing)
    index = {n: i for i, n in enumerate(names)}
    best = {n: -np.inf for n in names}
    for group in groups:
        members = [index[n] for n in group]
        for t, s in zip(members, group_scores(z, members, reduce)):
            best[names[t]] = max(best[names[t]], float(s))
    uncovered = [n for n, v in best.items() if v == -np.inf]
    if uncovered:
        raise ValueError(f"tasks {uncovered} are in no group; every task must be served by one")
    return float(sum(best.values()))
