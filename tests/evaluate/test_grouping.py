"""TAG network selection: the exact search equals brute force over every choice of groups."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from taskloom.evaluate.grouping import grouping_score, select_groups


def _brute_force(z: np.ndarray, names: list[str], networks: int) -> float:
    subsets = [c for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]
    best = -np.inf
    for count in range(1, networks + 1):
        for choice in itertools.combinations(subsets, count):
            if set().union(*choice) == set(names):
                best = max(best, grouping_score(z, choice, names))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_exact_search_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    k, networks = 3 + seed % 3, 1 + seed % 3
    names = [f"t{i}" for i in range(k)]
    z = rng.normal(size=(k, k))
    grouping = select_groups(z, networks, names)
    assert grouping.score == pytest.approx(_brute_force(z, names, networks))
    assert grouping.score == pytest.approx(grouping_score(z, grouping.groups, names))
    assert len(grouping.groups) <= networks
    assert set(grouping.served_by) == set(names)
    assert sum(grouping.task_scores.values()) == pytest.approx(grouping.score)


def test_block_structure_is_recovered_and_a_task_can_serve_twice():
    names = ["a", "b", "c", "d"]
    z = {
        "a": {"a": 0, "b": 1.0, "c": -1.0, "d": 0.5},
        "b": {"a": 1.0, "b": 0, "c": -1.0, "d": -1.0},
        "c": {"a": -1.0, "b": -1.0, "c": 0, "d": 1.0},
        "d": {"a": -1.0, "b": -1.0, "c": 1.0, "d": 0},
    }
    grouping = select_groups(z, 2)
    assert sorted(map(sorted, grouping.groups)) == [["a", "b"], ["c", "d"]]
    assert grouping.score == pytest.approx(4.0)
    # with three networks, d also gains from a group with a (0.5) but c serves d better (1.0): no change
    assert select_groups(z, 3).score == pytest.approx(4.0)
    # one network: everyone together, mean affinity from the other three
    together = select_groups(z, 1)
    assert together.groups == [names]
    assert together.score == pytest.approx(sum(np.array([[0, 1, -1, .5], [1, 0, -1, -1], [-1, -1, 0, 1],
                                                         [-1, -1, 1, 0]]).sum(0)) / 3)


def test_sum_reduction_rewards_total_affinity():
    z = np.array([[0, 1.0, 1.0], [1.0, 0, 1.0], [1.0, 1.0, 0]])
    assert select_groups(z, 1, list("abc"), reduce="sum").score == pytest.approx(6.0)
    assert select_groups(z, 1, list("abc")).score == pytest.approx(3.0)


def test_fourteen_tasks_finish_with_a_consistent_answer():
    rng = np.random.default_rng(0)
    names = [f"t{i}" for i in range(14)]
    z = rng.normal(size=(14, 14))
    grouping = select_groups(z, 3, names)
    assert grouping.score == pytest.approx(grouping_score(z, grouping.groups, names))
    assert set().union(*map(set, grouping.groups)) == set(names)
    assert grouping.score >= select_groups(z, 2, names).score


def test_bad_inputs_say_what_to_do():
    with pytest.raises(ValueError, match="no value for task pairs"):
        select_groups({"a": {"b": 0.1}, "b": {"a": None}}, 2)
    with pytest.raises(ValueError, match="networks must be at least 1"):
        select_groups(np.zeros((2, 2)), 0, ["a", "b"])
    with pytest.raises(ValueError, match="up to 16 tasks"):
        select_groups(np.zeros((17, 17)), 2, [str(i) for i in range(17)])
    with pytest.raises(ValueError, match="in no group"):
        grouping_score(np.zeros((2, 2)), [["a"]], ["a", "b"])


# a <-> b measured, a <-> c never (no shared batch), b <-> c measured
PARTIAL = {"a": {"a": 0.0, "b": 1.0, "c": None}, "b": {"a": 1.0, "b": 0.0, "c": 0.5},
           "c": {"a": None, "b": -0.2, "c": 0.0}}


def test_a_pair_never_measured_is_refused_unless_allowed():
    from taskloom.evaluate.grouping import missing_pairs

    assert missing_pairs(PARTIAL, ["a", "b", "c"]) == [("a", "c"), ("c", "a")]
    with pytest.raises(ValueError, match="no value for task pairs"):
        select_groups(PARTIAL, 2, ["a", "b", "c"])


def test_a_missing_pair_neither_helps_nor_hurts_a_group():
    # {a, b, c}: onto a only b's 1.0 is measured -> 1.0; onto b mean(1.0, -0.2) = 0.4; onto c only b's 0.5
    assert grouping_score(PARTIAL, [["a", "b", "c"]], ["a", "b", "c"], allow_missing=True) == pytest.approx(1.9)
    one = select_groups(PARTIAL, 1, ["a", "b", "c"], allow_missing=True)
    assert one.groups == [["a", "b", "c"]] and one.score == pytest.approx(1.9)
    # two networks: {a, b} serves a and b (1 + 1), {b, c} or {a, b, c} serves c (0.5): 2.5 beats every other choice
    two = select_groups(PARTIAL, 2, ["a", "b", "c"], allow_missing=True)
    assert two.score == pytest.approx(2.5)
    assert ["a", "b"] in two.groups and two.task_scores["c"] == pytest.approx(0.5)
