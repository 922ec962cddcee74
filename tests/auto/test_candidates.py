"""taskloom auto refuses a candidate architecture that cannot be built for the config, before any training."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("optuna")
pytest.importorskip("conllu")

from taskloom.auto import SearchSpace, run_auto  # noqa: E402
from taskloom.config import ConfigError, parse_config  # noqa: E402
from taskloom.data.datasets import load_dataset  # noqa: E402
from taskloom.data.datasets.petrogold import petrogold_path  # noqa: E402
from taskloom.train.trainer import Trainer  # noqa: E402

try:
    petrogold_path()
except FileNotFoundError as missing:
    pytest.skip(f"PetroGold is not installed: {missing}", allow_module_level=True)


def tagger_config(tmp_path: Path) -> object:
    """deprel and upos tagged by a small BiLSTM on the first 40 sentences (tag counts read from them)."""
    options = {"max_sentences": 40, "max_length": 30}
    tags = {t.name: t.num_outputs for t in load_dataset("petrogold", **options).tasks}
    return parse_config({
        "name": "tagger",
        "data": {"dataset": "petrogold", "options": options},
        "tasks": [{"name": name, "kind": "tagging", "target": name, "num_outputs": tags[name]}
                  for name in ("deprel", "upos")],
        "model": {"trunk": {"name": "bilstm", "options": {"embedding_dim": 8, "hidden_size": 8}}},
        "train": {"epochs": 1, "batch_size": 16, "num_threads": 1},
        "output_dir": str(tmp_path / "runs"),
    })


def test_mmoe_on_a_token_tagger_is_refused_naming_the_option_before_any_model_trains(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a model was trained before the candidates were checked")

    monkeypatch.setattr(Trainer, "fit", never)
    with pytest.raises(ConfigError, match=r"--architectures: mmoe cannot be built .*--architectures hard"):
        run_auto(tagger_config(tmp_path), SearchSpace(architectures=["hard", "mmoe"], methods=["equal"]),
                 tmp_path / "auto", trials=1)


def test_buildable_candidates_pass_the_check(tmp_path):
    from taskloom.auto.search import check_architectures
    from taskloom.train.runner import load_data

    config = tagger_config(tmp_path)
    space = SearchSpace(architectures=["hard"], methods=["equal"])
    assert check_architectures(config, load_data(config), space) is None
    space = SearchSpace(architectures=["hard", "mmoe"], methods=["equal"])
    with pytest.raises(ConfigError, match="mmoe"):
        check_architectures(config, load_data(config), space)
