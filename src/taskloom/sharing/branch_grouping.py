"""Task affinity and the grouping objective of fully-adaptive feature sharing.

Lu, Kumar, Zhai, Cheng, Javidi & Feris 2017, "Fully-adaptive feature sharing in multi-task networks with
applications in person attribute classification" (CVPR), section 3 (task grouping):

- affinity of tasks i, j: the probability that an example is simultaneously difficult or simultaneously
  easy for both, ``A(i, j) = P(e_i = 1, e_j = 1) + P(e_i = 0, e_j = 0)``, estimated on validation rows
  labelled for both tasks, where ``e_i = 1`` when the example's loss for task i is above task i's mean
  validation loss (the indicator of a "difficult" example);
- affinity of two branches (sets of tasks): the mean affinity over their pairs of tasks;
- a grouping g of the n branches under a branch point into c groups costs the separation
  ``sum over groups k of |k| * max over i in k of (1 - mean affinity of i to the other members of k)``
  (0 for a one-member group) plus ``alpha`` times the parameters the split creates, ``(c - 1)`` copies
  of the split layer.

The separation is the paper's "largest dissimilarity of a member to its group" per group, weighted by the
group's size (each member pays its group's worst): unweighted, one large mixed group costs one maximum while
two coherent groups cost two, so a split into related groups could never pay off.
"""
from __future__ import annotations

import itertools
from typing import Iterator, Sequence

import torch
from torch import Tensor

EXACT_LIMIT = 8  # up to this many branches every partition is tried (Bell(8) = 4140)


def lu_affinity(losses: Tensor, labelled: Tensor | None = None) -> Tensor:
    """The K x K affinity of Lu et al. 2017 from per-example losses ``losses`` (N x K).

    ``labelled`` (N x K, bool) marks which losses exist; a pair with no row labelled for both gets 0.5
    (no evidence either way). The diagonal is 1.
    """
    if losses.dim() != 2:
        raise ValueError(f"losses must be N x K (examples x tasks), got shape {tuple(losses.shape)}")
    labelled = torch.ones_like(losses, dtype=torch.bool) if labelled is None else labelled.bool()
    if labelled.shape != losses.shape:
        raise ValueError(f"labelled has shape {tuple(labelled.shape)}, losses {tuple(losses.shape)}")
    losses = losses.double()
    counts = labelled.sum(0).clamp_min(1)
    means = torch.where(labelled, losses, 0).sum(0) / counts
    hard = (losses > means).double()
    easy = 1 - hard
    both = labelled.double()
    together = both.T @ both
    agree = (hard * both).T @ (hard * both) + (easy * both).T @ (easy * both)
    affinity = torch.where(together > 0, agree / together.clamp_min(1), torch.full_like(agree, 0.5))
    affinity.fill_diagonal_(1.0)
    return affinity


def branch_affinity(task_affinity: Tensor, branches: Sequence[Sequence[int]]) -> Tensor:
    """Affinity between branches (each a list of task indices): the mean task affinity over their pairs."""
    n = len(branches)
    out = torch.ones(n, n, dtype=task_affinity.dtype)
    for a, b in itertools.combinations(range(n), 2):
        value = task_affinity[list(branches[a])][:, list(branches[b])].mean()
        out[a, b] = out[b, a] = value
    return out


def separation(affinity: Tensor, groups: Sequence[Sequence[int]]) -> float:
    """Sum over groups of size x the largest dissimilarity (1 - mean affinity to the other members) within each."""
    total = 0.0
    for group in groups:
        if len(group) < 2:
            continue
        worst = 0.0
        for i in group:
            others = [j for j in group if j != i]
            worst = max(worst, 1.0 - float(affinity[i, others].mean()))
        total += len(group) * worst
    return total


def partitions(items: Sequence[int]) -> Iterator[list[list[int]]]:
    """Every partition of ``items`` into non-empty groups (each once, groups ordered by first item)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partial in partitions(rest):
        yield [[first], *partial]
        for k in range(len(partial)):
            yield [*partial[:k], [first, *partial[k]], *partial[k + 1:]]


def _agglomerative(affinity: Tensor) -> dict[int, list[list[int]]]:
    """For n above EXACT_LIMIT: the partitions met while merging the pair whose union separates least."""
    groups = [[i] for i in range(affinity.shape[0])]
    found = {len(groups): [list(g) for g in groups]}
    while len(groups) > 1:
        best = min(itertools.combinations(range(len(groups)), 2),
                   key=lambda ab: separation(affinity, [groups[ab[0]] + groups[ab[1]]]))
        a, b = best
        groups = [g for k, g in enumerate(groups) if k not in best] + [groups[a] + groups[b]]
        found[len(groups)] = [sorted(g) for g in groups]
    return found


def best_grouping(affinity: Tensor, layer_parameters: int, alpha: float, max_groups: int | None = None,
                  budget: int | None = None) -> tuple[list[list[int]], dict[int, float]]:
    """The grouping of the n branches minimizing ``separation + alpha * (c - 1) * layer_parameters``.

    ``max_groups`` caps c; ``budget`` is the number of parameters the split may create at most (None: no cap).
    Returns the groups (lists of branch indices, sorted) and the best loss found for each allowed c.
    """
    n = affinity.shape[0]
    if n == 0:
        raise ValueError("best_grouping needs at least one branch")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    limit = n if max_groups is None else max(1, min(n, max_groups))
    if budget is not None:
        limit = min(limit, 1 + max(0, budget) // max(1, layer_parameters))
    candidates: dict[int, list[list[int]]] = {}
    best_separation: dict[int, float] = {}
    if n <= EXACT_LIMIT:
        for partition in partitions(list(range(n))):
            c = len(partition)
            if c > limit:
                continue
            value = separation(affinity, partition)
            if c not in best_separation or value < best_separation[c] - 1e-12:
                best_separation[c], candidates[c] = value, partition
    else:
        for c, partition in _agglomerative(affinity).items():
            if c <= limit:
                candidates[c], best_separation[c] = partition, separation(affinity, partition)
    losses = {c: best_separation[c] + alpha * (c - 1) * layer_parameters for c in sorted(candidates)}
    chosen = min(losses, key=lambda c: (losses[c], c))
    return sorted(sorted(g) for g in candidates[chosen]), losses
