"""The README's section on architectures, regularizers and token tagging: where it is, and every YAML
example in it trains end to end (on a few rows); its Python examples run in tests/test_readme.py."""
import re
from pathlib import Path

import pytest
import yaml

from taskloom.config import parse_config
from taskloom.train.runner import run_training

README = Path(__file__).resolve().parents[1] / "README.md"
TITLE = "## Architectures, regularizers and token tagging"
FEW_ROWS = {"adult": {"size": 400}, "synthetic": {"n": 300}, "petrogold": {"max_sentences": 60}}


def section() -> str:
    return README.read_text().split(TITLE, 1)[1].split("\n## ", 1)[0]


def test_the_section_follows_balancing_methods():
    titles = re.findall(r"^## (.+)$", README.read_text(), flags=re.M)
    assert titles.index(TITLE[3:]) == titles.index("Balancing methods") + 1
    text = section()
    for name in ("hard", "soft", "hybrid", "cross_stitch", "mmoe", "ple", "low_level", "cascade", "interaction",
                 "adversarial", "branching", "learn_to_branch", "mtan", "dselect_k", "l21", "l1inf", "trace", "mean", "cluster", "trl"):
        assert f"| `{name}` |" in text, f"{name} is not in the README's tables"
    assert "MultiTaskLinear" in text and "petrogold" in text and "tagging" in text


@pytest.mark.parametrize("index", range(len(re.findall(r"```yaml\n", section()))))
def test_yaml_example_trains(index, tmp_path):
    raw = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", section(), flags=re.S)[index])
    dataset = raw["data"]["dataset"]
    if dataset in ("petrogold", "adult"):  # packages installed --no-deps for their data files: found, not imported
        from taskloom.data.datasets.adult import adult_dir
        from taskloom.data.datasets.petrogold import petrogold_path

        try:
            adult_dir() if dataset == "adult" else (pytest.importorskip("conllu"), petrogold_path())
        except FileNotFoundError as missing:
            pytest.skip(f"{dataset} is not installed: {missing}")
    raw["data"]["options"] = {**raw["data"].get("options", {}), **FEW_ROWS[dataset]}
    raw["train"] = {"epochs": 1, "batch_size": 64}
    summary = run_training(parse_config(raw, "README"), tmp_path / "run")
    (cell,) = summary["cells"].values()
    assert all(result.get("labelled", 0) > 0 for result in cell["test"].values())
    if raw.get("regularizers"):
        written = cell["regularizers"]
        assert [r["name"] for r in written] == ["L21", "TaskRelationship"]
        assert len(written[1]["omega"]) == 3
