"""Configs are validated on load: each bad field is refused with its path."""
import pytest

from taskloom.config import ConfigError, load_config, parse_config


def _error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return str(info.value)


def test_defaults_are_valid():
    config = parse_config({})
    assert config.data.dataset == "multimnist" and config.balancing.method == "equal"


def test_unknown_key_names_its_path():
    assert "train.epoch: unknown key" in _error({"train": {"epoch": 3}})
    assert "tasks[0].colour: unknown key" in _error({"tasks": [{"name": "a", "kind": "binary", "target": "a", "colour": 1}]})


def test_wrong_type_names_its_path():
    message = _error({"train": {"epochs": "many"}, "optimizer": {"lr": -1}})
    assert "train.epochs:" in message and "optimizer.lr:" in message


def test_task_without_target_is_refused():
    assert "tasks[1].target: Field required" in _error(
        {"tasks": [{"name": "a", "kind": "binary", "target": "a"}, {"name": "b", "kind": "binary"}]}
    )


def test_unknown_kind_duplicate_names_and_dangling_references():
    assert "tasks[0].kind: unknown task kind 'ranking'" in _error({"tasks": [{"name": "a", "kind": "ranking", "target": "a"}]})
    two = [{"name": "a", "kind": "binary", "target": "x"}, {"name": "a", "kind": "binary", "target": "y"}]
    assert "repeated: ['a']" in _error({"tasks": two})
    cond = [{"name": "buy", "kind": "binary", "target": "buy", "only_where": {"task": "click", "equals": 1}}]
    assert "tasks[0].only_where.task 'click' is not a task name" in _error({"tasks": cond})
    assert "selection.task" in _error({"selection": {"score": "task"}})


def test_table_needs_tasks():
    assert "a table needs tasks" in _error({"data": {"dataset": "table", "options": {"path": "x.csv"}}})


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)
