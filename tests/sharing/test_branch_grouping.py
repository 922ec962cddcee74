"""Lu et al. 2017's task affinity and grouping objective, on hand-made losses and affinity matrices."""
from __future__ import annotations

import pytest
import torch

from taskloom.sharing.branch_grouping import (
    best_grouping, branch_affinity, lu_affinity, partitions, separation,
)


def test_affinity_is_the_share_of_examples_both_hard_or_both_easy():
    # task means: a 2.5, b 2.5, c 2.0; hard (above the mean): a [0,0,1,1], b [0,0,1,1], c [1,0,1,0]
    losses = torch.tensor([[1.0, 1.0, 3.0],
                           [2.0, 2.0, 1.0],
                           [3.0, 3.0, 3.0],
                           [4.0, 4.0, 1.0]])
    affinity = lu_affinity(losses)
    expected = torch.tensor([[1.0, 1.0, 0.5],
                             [1.0, 1.0, 0.5],
                             [0.5, 0.5, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(affinity, expected)


def test_affinity_uses_rows_labelled_for_both_tasks_only():
    losses = torch.tensor([[1.0, 9.0], [3.0, 9.0], [9.0, 1.0], [9.0, 3.0]])
    labelled = torch.tensor([[True, False], [True, False], [False, True], [False, True]])
    affinity = lu_affinity(losses, labelled)
    assert affinity[0, 1] == 0.5 and affinity[1, 0] == 0.5  # no shared row: no evidence either way
    # the unlabelled 9.0s must not move a task's mean: with them task 0's mean would be 5.5
    losses[2:, 0] = 100.0
    torch.testing.assert_close(lu_affinity(losses, labelled), affinity)


def test_affinity_refuses_a_bad_shape():
    with pytest.raises(ValueError, match="N x K"):
        lu_affinity(torch.zeros(3))


def test_branch_affinity_is_the_mean_over_pairs_of_tasks():
    task = torch.tensor([[1.0, 0.8, 0.2], [0.8, 1.0, 0.4], [0.2, 0.4, 1.0]])
    out = branch_affinity(task, [[0, 1], [2]])
    assert out[0, 1].item() == pytest.approx((0.2 + 0.4) / 2)
    assert out[0, 0].item() == 1.0


@pytest.mark.parametrize("n,bell", [(1, 1), (2, 2), (3, 5), (4, 15), (5, 52)])
def test_partitions_are_every_set_partition_once(n, bell):
    found = list(partitions(list(range(n))))
    assert len(found) == bell
    canonical = {tuple(sorted(tuple(sorted(g)) for g in p)) for p in found}
    assert len(canonical) == bell
    assert all(sorted(i for g in p for i in g) == list(range(n)) for p in found)


TWO_BLOCKS = torch.tensor([[1.0, 0.9, 0.3, 0.3],
                           [0.9, 1.0, 0.3, 0.3],
                           [0.3, 0.3, 1.0, 0.8],
                           [0.3, 0.3, 0.8, 1.0]])


def test_separation_by_hand():
    # one group: each task's mean affinity to the others: 0.5, 0.5, 0.4667, 0.4667 -> worst 0.5333, times 4
    assert separation(TWO_BLOCKS, [[0, 1, 2, 3]]) == pytest.approx(4 * (1 - 1.4 / 3))
    assert separation(TWO_BLOCKS, [[0, 1], [2, 3]]) == pytest.approx(2 * 0.1 + 2 * 0.2)
    assert separation(TWO_BLOCKS, [[0], [1], [2], [3]]) == 0.0


def test_the_two_blocks_are_the_best_partition_at_a_moderate_cost():
    # losses (a = alpha * 100 = 0.5): 1 group 2.133; {01}{23} 0.6 + a = 1.1; 3 groups at best ({01}{2}{3})
    # 0.2 + 2a = 1.2; singletons 3a = 1.5
    groups, losses = best_grouping(TWO_BLOCKS, layer_parameters=100, alpha=0.005)
    assert groups == [[0, 1], [2, 3]]
    assert losses[2] == pytest.approx(1.1) and losses[3] == pytest.approx(1.2) and losses[4] == pytest.approx(1.5)
    assert losses[1] == pytest.approx(4 * (1 - 1.4 / 3))


def test_cost_decides_the_number_of_groups():
    assert best_grouping(TWO_BLOCKS, 100, alpha=1.0)[0] == [[0, 1, 2, 3]]  # splitting never pays
    assert best_grouping(TWO_BLOCKS, 100, alpha=0.0)[0] == [[0], [1], [2], [3]]  # free: every task alone


def test_max_groups_and_budget_cap_the_split():
    groups, losses = best_grouping(TWO_BLOCKS, 100, alpha=0.0, max_groups=2)
    assert groups == [[0, 1], [2, 3]] and sorted(losses) == [1, 2]
    groups, losses = best_grouping(TWO_BLOCKS, 100, alpha=0.0, budget=99)  # not even one copy fits
    assert groups == [[0, 1, 2, 3]] and sorted(losses) == [1]
    groups, _ = best_grouping(TWO_BLOCKS, 100, alpha=0.0, budget=100)
    assert groups == [[0, 1], [2, 3]]


def test_many_branches_use_the_agglomerative_search():
    n = 10  # above the exact limit; two blocks of five
    block = torch.tensor([i // 5 for i in range(n)])
    affinity = torch.where(block[:, None] == block[None, :], 0.9, 0.2)
    affinity.fill_diagonal_(1.0)
    groups, _ = best_grouping(affinity, 100, alpha=0.002)
    assert groups == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_negative_alpha_is_refused():
    with pytest.raises(ValueError, match="alpha"):
        best_grouping(TWO_BLOCKS, 100, alpha=-1.0)
