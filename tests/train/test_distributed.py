"""Data parallelism on 2 CPU processes (gloo): every balancing method's step equals one process's on the whole batch.

The workers are spawned once; each loops over every method and mode (see ``_ddp_equivalence``).
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.multiprocessing as mp

from train._ddp_equivalence import free_tcp_address, spawned_worker

from taskloom.train.distributed import shard_batch, shard_bounds

TOLERANCE = 1e-5
#: refused under data parallelism, with the reason the error must give
REFUSED = {"graddrop/representation": "GradDrop does not support data-parallel training in representation mode",
           "graddrop/representation/task_chunk=2":
               "GradDrop does not support data-parallel training in representation mode",
           "autolambda": "autolambda does not support data-parallel training yet"}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    out = folder / "table.json"
    mp.spawn(spawned_worker, args=(2, free_tcp_address(), str(out)), nprocs=2, join=True)
    return json.loads(out.read_text())


def test_every_method_and_mode_matches_one_process(table):
    from train._ddp_equivalence import cases, chunked_cases

    assert len(table) == len(cases()) + len(chunked_cases())
    for key, row in table.items():
        if key in REFUSED:
            assert REFUSED[key] in row.get("refused", ""), f"{key} must be refused clearly, got {row}"
            continue
        assert "refused" not in row, f"{key} was refused: {row['refused']}"
        assert row["relative_difference"] <= TOLERANCE, f"{key}: {row['relative_difference']:.2e} after 3 steps"
        assert row["rank_spread"] == 0.0, f"{key}: the ranks' parameters differ"


def test_shards_are_contiguous_and_cover_the_batch():
    assert [shard_bounds(7, r, 2) for r in range(2)] == [(0, 3), (3, 7)]
    from train._ddp_equivalence import make_data

    data, _ = make_data()
    batch = data.batch(torch.arange(24))
    parts = [shard_batch(batch, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([p.inputs for p in parts]), batch.inputs)
    assert [int(p.masks["quadrant"].sum()) for p in parts] == [12, 3]


def test_a_mixed_loader_is_sharded_batch_by_batch():
    """Two ranks of a multi-source loader see, together and in order, the batches one process sees."""
    from taskloom.data.dataset import MultiTaskDataset
    from taskloom.data.mixing import MixedLoader
    from taskloom.train.distributed import Communicator, ShardedLoader

    generator = torch.Generator().manual_seed(0)
    sources = {name: MultiTaskDataset(torch.randn(n, 3, generator=generator), {name: torch.randn(n)})
               for name, n in (("a", 40), ("b", 90))}
    whole = list(MixedLoader(sources, batch_size=16, seed=1))
    ranks = [list(ShardedLoader(MixedLoader(sources, batch_size=16, seed=1), Communicator(r, 2))) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole)
    for batch, first, second in zip(whole, *ranks):
        assert torch.equal(torch.cat([first.inputs, second.inputs]), batch.inputs)
        for name in batch.targets:
            assert torch.equal(torch.cat([first.targets[name], second.targets[name]]), batch.targets[name])
