"""Every config in examples/ is a valid taskloom config."""
from pathlib import Path

import pytest

from taskloom.config import load_config

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_is_valid(path):
    load_config(path)


def test_the_readme_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"adult.yaml", "yeast.yaml"} <= names
