"""Streamed tables: one-pass statistics, the hash split, the loader, and the run equal to the in-memory one."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from taskloom.config import ConfigError, parse_config
from taskloom.data.dataset import BatchLoader
from taskloom.data.datasets.table import load_table
from taskloom.data.hash_split import hash_split_rows, position_hashes
from taskloom.data.streaming import StreamingTable, load_streaming_table
from taskloom.data.streaming_loader import StreamingLoader, rank_pieces, shard_size
from taskloom.task import Task

ROWS = 3000


def make_frame(n: int = ROWS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(1e4, 3.0, n)  # a large offset: a sum of squares would lose the variance
    z = rng.normal(-1.0, 0.5, n)
    color = rng.choice(["red", "green", "blue"], n)
    price = 2 * (x - 1e4) + z + rng.normal(0, 0.1, n)
    buy = np.where(rng.random(n) < 1 / (1 + np.exp(-z)), "yes", "no").astype(object)
    buy[rng.random(n) < 0.1] = None
    return pd.DataFrame({"id": rng.permutation(n) * 7 + 3, "x": x, "z": z, "color": color,
                         "price": price, "buy": buy})


def tasks() -> list[Task]:
    return [Task("price", "regression"), Task("buy", "binary")]


def write_parts(frame: pd.DataFrame, directory: Path, parts: int, form: str, row_group: int | None = None) -> Path:
    """``frame`` cut into ``parts`` files (names sort in row order) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        piece = frame.iloc[chunk]
        if form == "csv":
            piece.to_csv(directory / f"part-{i:03d}.csv", index=False)
        else:
            piece.to_parquet(directory / f"part-{i:03d}.parquet", index=False, row_group_size=row_group)
    return directory


# (a) statistics ----------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["csv", "parquet"])
def test_one_pass_statistics_equal_numpy_on_the_training_rows(tmp_path, form):
    frame = make_frame()
    path = write_parts(frame, tmp_path / "table", 3, form, row_group=500)
    table = StreamingTable(path, tasks(), 0.1, 0.2, seed=4, key="id", read_rows=256).fit()
    train = frame.iloc[hash_split_rows(frame["id"], len(frame), 0.1, 0.2, 4)["train"]]
    encoder = table.encoder
    for column in ("x", "z"):
        assert encoder.means[column] == pytest.approx(train[column].mean(), rel=1e-12)
        assert encoder.scales[column] == pytest.approx(train[column].to_numpy().std(), rel=1e-9)
    assert encoder.categories["color"] == sorted(set(train["color"]))
    assert table.labels["positive_class"]["buy"] == "yes"
    assert table.sizes == {name: len(rows) for name, rows in
                           hash_split_rows(frame["id"], len(frame), 0.1, 0.2, 4).items()}


def test_streamed_encoding_equals_the_in_memory_encoding(tmp_path):
    frame = make_frame()
    path = write_parts(frame, tmp_path / "table", 2, "parquet", row_group=700)
    memory = load_table(tasks(), path=None, frame=frame, seed=3, split_key="id")
    streamed = load_streaming_table(tasks(), path, seed=3, key="id", read_rows=300)
    assert streamed.info["preprocessing"]["categories"] == memory.info["preprocessing"]["categories"]
    for name in ("val", "test"):
        ours, theirs = getattr(streamed, name), getattr(memory, name)
        np.testing.assert_array_equal(streamed.info["rows"][name], memory.info["rows"][name])
        torch.testing.assert_close(ours.inputs, theirs.inputs, rtol=0, atol=1e-6)
        for task in ("price", "buy"):
            assert torch.equal(ours.targets[task], theirs.targets[task])
            assert torch.equal(ours.masks[task], theirs.masks[task])


# (b) the hash split ------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["csv", "parquet"])
def test_streamed_split_is_stable_across_read_sizes_and_file_cuts(tmp_path, form):
    frame = make_frame(1200).drop(columns="id")
    expected = hash_split_rows(None, len(frame), 0.1, 0.2, seed=5)
    for parts, read_rows in ((1, 1200), (4, 97), (7, 10)):
        path = write_parts(frame, tmp_path / f"{form}-{parts}", parts, form, row_group=150)
        table = StreamingTable(path, tasks(), 0.1, 0.2, seed=5, read_rows=read_rows).fit()
        got = {name: [] for name in expected}
        for _, positions, chunk in table.chunks(columns=table.needed_columns):
            for name, code in (("train", 0), ("val", 1), ("test", 2)):
                got[name] += positions[table.split_codes(chunk, positions) == code].tolist()
        for name in expected:
            assert got[name] == expected[name].tolist()
    assert np.array_equal(position_hashes(np.arange(3), 5), position_hashes(np.arange(3), 5))


# the loader --------------------------------------------------------------------------------------
def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_full_shuffle_buffer_gives_the_in_memory_batches(tmp_path):
    frame = make_frame(1500)
    path = write_parts(frame, tmp_path / "table", 3, "parquet", row_group=200)
    streamed = load_streaming_table(tasks(), path, seed=2, key="id", read_rows=128)
    memory = load_table(tasks(), frame=frame, seed=2, split_key="id")
    loader = streamed.info["streaming"].loader(batch_size=64, seed=9, shuffle_buffer=10**6)
    reference = BatchLoader(memory.train, 64, seed=9)
    assert len(loader) == len(reference)
    for epoch in (1, 2):
        ours, theirs = _batches(loader, epoch), _batches(reference, epoch)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a.inputs, b.inputs, rtol=0, atol=1e-6)
            assert all(torch.equal(a.targets[t], b.targets[t]) for t in b.targets)
            assert a.masks.keys() == b.masks.keys() and all(torch.equal(a.masks[t], b.masks[t]) for t in b.masks)


def test_small_shuffle_buffer_yields_every_training_row_once_per_epoch_reproducibly(tmp_path):
    frame = make_frame(1500)
    frame["x"] = np.arange(len(frame)) + 0.25  # the standardized x identifies the row
    path = write_parts(frame, tmp_path / "table", 3, "parquet", row_group=200)
    splits = load_streaming_table(tasks(), path, seed=2, key="id", read_rows=128)
    table = splits.info["streaming"]
    loader = table.loader(batch_size=50, seed=1, shuffle_buffer=300)
    mean, scale = table.encoder.means["x"], table.encoder.scales["x"]

    def rows(batches):
        return np.concatenate([np.round(b.inputs[:, 0].double().numpy() * scale + mean - 0.25) for b in batches])

    first = rows(_batches(loader, 1))
    train = hash_split_rows(frame["id"], len(frame), 0.1, 0.2, 2)["train"]
    assert sorted(first.astype(int).tolist()) == train.tolist()
    assert np.array_equal(rows(_batches(loader, 1)), first)
    assert not np.array_equal(rows(_batches(loader, 2)), first)
    assert [len(b) for b in _batches(loader, 1)][:-1] == [50] * (len(loader) - 1)


def test_rank_loaders_read_disjoint_pieces_with_their_share_of_each_batch(tmp_path):
    assert [rank_pieces(7, r, 3) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert [shard_size(10, r, 3) for r in range(3)] == [3, 3, 4]
    frame = make_frame(1200)
    frame["x"] = np.arange(len(frame)) + 0.25
    path = write_parts(frame, tmp_path / "table", 1, "parquet", row_group=100)
    splits = load_streaming_table(tasks(), path, seed=2, key="id", read_rows=64)
    table = splits.info["streaming"]
    whole = table.loader(batch_size=32, seed=0, shuffle_buffer=10**6)
    mean, scale = table.encoder.means["x"], table.encoder.scales["x"]
    seen = []
    for rank in (0, 1):
        loader = whole.shard(rank, 2)
        loader.set_epoch(1)
        batches = list(loader)
        assert len(batches) == len(loader) == min(whole.shard(r, 2).steps for r in (0, 1))
        assert all(len(b) == 16 for b in batches[:-1])
        rows = np.concatenate([np.round(b.inputs[:, 0].double().numpy() * scale + mean - 0.25) for b in batches])
        pieces = {int(r) // 100 for r in rows}
        assert pieces <= set(rank_pieces(12, rank, 2))
        seen.append(set(rows.astype(int).tolist()))
    assert not seen[0] & seen[1]


def test_the_trainers_sharded_loader_reads_a_streamed_table_by_rank(tmp_path):
    from taskloom.train.distributed import Communicator, ShardedLoader

    path = write_parts(make_frame(1200), tmp_path / "table", 4, "parquet", row_group=300)
    table = load_streaming_table(tasks(), path, seed=2, key="id", read_rows=64).info["streaming"]
    whole = table.loader(batch_size=32, seed=0, shuffle_buffer=10**6)
    for rank in (0, 1):
        sharded = ShardedLoader(whole, Communicator(rank, 2))
        sharded.set_epoch(3)
        own = whole.shard(rank, 2)
        own.set_epoch(3)
        ours, theirs = list(sharded), list(own)
        assert len(sharded) == len(own) and len(ours) == len(theirs)
        assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(ours, theirs))


# (c) a run streamed equals the run in memory -----------------------------------------------------
def _config(tmp_path: Path, path: Path, streaming: bool) -> dict:
    return {
        "name": "stream" if streaming else "memory",
        "output_dir": str(tmp_path / ("stream" if streaming else "memory")),
        "data": {"dataset": "table", "options": {"path": str(path)}, "split": {"key": "id"},
                 "streaming": streaming, "streaming_options": {"shuffle_buffer": 100_000, "read_rows": 256}},
        "tasks": [{"name": "price", "kind": "regression", "target": "price"},
                  {"name": "buy", "kind": "binary", "target": "buy"}],
        "model": {"trunk": {"name": "mlp", "options": {"hidden": [8]}}},
        "train": {"epochs": 2, "batch_size": 64, "baselines": False},
    }


def _test_metrics(run_dir: Path) -> dict:
    results = sorted(run_dir.rglob("results.json"))
    assert len(results) == 1
    return json.loads(results[0].read_text())["test"]


def test_streamed_and_in_memory_runs_give_the_same_metrics(tmp_path):
    import yaml

    from taskloom.cli import main
    from taskloom.train.runner import run_training

    frame = make_frame(1000)
    frame.to_csv(tmp_path / "table.csv", index=False)
    run_training(parse_config(_config(tmp_path, tmp_path / "table.csv", False)))
    config_file = tmp_path / "stream.yaml"
    config_file.write_text(yaml.safe_dump(_config(tmp_path, tmp_path / "table.csv", True)))
    assert main(["train", str(config_file)]) == 0
    ours, theirs = _test_metrics(tmp_path / "stream"), _test_metrics(tmp_path / "memory")
    assert ours.keys() == theirs.keys()
    for task in theirs:
        for metric, value in theirs[task].items():
            if isinstance(value, float):
                assert ours[task][metric] == pytest.approx(value, abs=1e-6), (task, metric)
    saved = json.loads(next((tmp_path / "stream").rglob("model.json")).read_text())
    assert saved["preprocessing"]["numeric"] == ["x", "z"]
    from taskloom import load

    rows = frame.drop(columns=["price", "buy"]).head(20)
    streamed = load(next((tmp_path / "stream").iterdir())).predict(rows)
    in_memory = load(next((tmp_path / "memory").iterdir())).predict(rows)
    pd.testing.assert_frame_equal(streamed, in_memory, atol=1e-5, rtol=0)


# (d) errors ---------------------------------------------------------------------------------------
def test_missing_key_column_is_named(tmp_path):
    path = write_parts(make_frame(300), tmp_path / "t", 1, "csv")
    with pytest.raises(ValueError, match=r"data.split.key: column 'row_id' is not in table .*part-000.csv"):
        StreamingTable(path, tasks(), 0.1, 0.2, 0, key="row_id")


def test_missing_target_column_is_named_with_the_file(tmp_path):
    path = write_parts(make_frame(300), tmp_path / "t", 2, "parquet")
    with pytest.raises(ValueError, match=r"task 'sold': target column 'sold' is not in table .*part-000.parquet"):
        StreamingTable(path, [Task("sold", "binary")], 0.1, 0.2, 0)


def test_missing_feature_column_is_named(tmp_path):
    path = write_parts(make_frame(300), tmp_path / "t", 1, "parquet")
    with pytest.raises(ValueError, match=r"features \['weight'\] are not in table"):
        StreamingTable(path, tasks(), 0.1, 0.2, 0, features=["x", "weight"]).fit()


def test_bad_feature_cell_names_its_file_and_row(tmp_path):
    frame = make_frame(300)
    frame["z"] = frame["z"].astype(object)
    frame.loc[250, "z"] = "oops"
    path = write_parts(frame, tmp_path / "t", 2, "csv")
    with pytest.raises(ValueError, match=r"table file '.*part-001.csv': .*Row #102.*'oops'.*fix the cell"):
        StreamingTable(path, tasks(), 0.1, 0.2, 0, features=["x", "z"]).fit()


def test_bad_target_cell_is_named_by_row_and_line(tmp_path):
    frame = make_frame(300)
    frame["price"] = frame["price"].astype(object)
    frame.loc[250, "price"] = "oops"
    frame.loc[10, "price"] = "n/a?"
    path = write_parts(frame, tmp_path / "t", 1, "csv")
    with pytest.raises(ValueError, match=r"task 'price' \(column 'price'\): row 10 \(line 12 of .*part-000.csv\)"):
        StreamingTable(path, tasks(), 0.1, 0.2, 0, features=["x", "z"]).fit()


def test_streaming_is_refused_for_other_data_sets_and_key_needs_a_table():
    base = {"tasks": [{"name": "a", "kind": "binary", "target": "a"}]}
    with pytest.raises(ConfigError, match="data.streaming: streams only the table data set"):
        parse_config({**base, "data": {"dataset": "synthetic", "streaming": True}})
    with pytest.raises(ConfigError, match="data.split.key: names a column of the table data set"):
        parse_config({**base, "data": {"dataset": "synthetic", "split": {"key": "id"}}})


def test_loader_needs_fitted_statistics(tmp_path):
    path = write_parts(make_frame(300), tmp_path / "t", 1, "parquet")
    with pytest.raises(ValueError, match="call StreamingTable.fit"):
        StreamingLoader(StreamingTable(path, tasks(), 0.1, 0.2, 0), 32, 0, 100)
