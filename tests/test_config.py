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
    assert "tasks[0].only_where.task: 'click' is not a task name" in _error({"tasks": cond})
    assert "selection.task: score 'task' needs selection.task" in _error({"selection": {"score": "task"}})


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


def test_wrong_types_are_refused_not_coerced():
    assert "train.epochs: Input should be a valid integer, got True" in _error({"train": {"epochs": True}})
    assert "train.epochs: Input should be a valid integer, got '3'" in _error({"train": {"epochs": "3"}})
    assert "train.compile: Input should be a valid boolean, got 1" in _error({"train": {"compile": 1}})
    assert "optimizer.lr: Input should be a valid number, got True" in _error({"optimizer": {"lr": True}})
    config = parse_config({"optimizer": {"lr": 1}, "tasks": [{"name": "a", "kind": "binary", "target": "a",
                                                              "class_weights": [1, 2]}]})
    assert config.optimizer.lr == 1.0 and config.tasks[0].class_weights == [1.0, 2.0]  # whole numbers are floats


def test_a_yaml_exponent_without_a_dot_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optimizer:\n  lr: 1e-3\n  weight_decay: 5E-4\n")
    config = load_config(path)
    assert config.optimizer.lr == 0.001 and config.optimizer.weight_decay == 0.0005


TABLE = {"dataset": "table", "options": {"path": "t.csv"}}
TASKS = [{"name": "a", "kind": "binary", "target": "a"}, {"name": "b", "kind": "regression", "target": "b"}]


@pytest.mark.parametrize("raw, expected, known", [
    ({"data": {"dataset": "table", "options": {"pth": "t.csv"}}, "tasks": TASKS},
     "data.options.pth: unknown option; known: ", ["path", "frame", "features", "(data set table)"]),
    ({"data": {"options": {"seed": 3}}}, "data.options.seed: not an option: taskloom passes seed to data set "
                                         "multimnist itself; set it with data.split_seed", []),
    ({"data": {"sources": [{"name": "s", "dataset": "synthetic", "options": {"rows": 10}}]}},
     "data.sources[0].options.rows: unknown option; known: ", ["correlation", "(data set synthetic)"]),
    ({"data": TABLE, "tasks": TASKS, "balancing": {"method": "static"}},
     "balancing.options.weights: required by method static", []),
    ({"balancing": {"method": "dwa", "options": {"temprature": 2}}},
     "balancing.options.temprature: unknown option; known: ", ["temperature", "(method dwa)"]),
    ({"model": {"architecture": "mmoe", "options": {"experts": 4}}},
     "model.options.experts: unknown option; known: ", ["num_experts", "(architecture mmoe)"]),
    ({"model": {"options": {"tasks": []}}}, "model.options.tasks: not an option: taskloom passes tasks", []),
    ({"regularizers": [{"name": "mean"}, {"name": "l21", "options": {"q": 3}}]},
     "regularizers[1].options.q: unknown option; known: ", ["strength", "(regularizer l21)"]),
])
def test_options_are_checked_against_what_they_configure(raw, expected, known):
    line = next(line for line in _error(raw).splitlines() if expected in line)
    assert all(name in line.split(expected)[1] for name in known)


def test_valid_options_pass():
    config = parse_config({"data": TABLE, "tasks": TASKS, "balancing": {"method": "static", "options": {
        "weights": {"a": 1, "b": 2}}}, "model": {"architecture": "mmoe", "options": {"num_experts": 2}},
        "regularizers": [{"name": "l21", "options": {"strength": 0.1}}]})
    assert config.balancing.options == {"weights": {"a": 1, "b": 2}}


def test_a_loss_level_method_given_a_mode_names_balancing_options_mode():
    message = _error({"balancing": {"method": "uncertainty", "options": {"mode": "representation"}}})
    assert "balancing.options.mode: uncertainty weights the task losses and has no gradient mode" in message
    assert "pcgrad" in message.split("gradient-level methods:")[1]
    assert parse_config({"balancing": {"method": "pcgrad", "options": {"mode": "representation"}}})


def test_a_mode_a_gradient_method_does_not_support_is_refused_at_load():
    message = _error({"balancing": {"method": "dbmtl", "options": {"mode": "representation"}}})
    assert "balancing.options.mode: dbmtl supports mode parameters only, got 'representation'" in message
    assert parse_config({"balancing": {"method": "dbmtl", "options": {"mode": "parameters"}}})


def test_unknown_registered_names_name_their_field():
    assert "balancing.method: unknown balancing method 'pcgard'; known: " in _error({"balancing": {"method": "pcgard"}})
    assert "regularizers[0].name: unknown regularizer 'l12'; known: " in _error({"regularizers": [{"name": "l12"}]})
    assert "model.architecture: unknown architecture 'soft2'" in _error({"model": {"architecture": "soft2"}})
    assert "model.trunk.name: unknown trunk 'resnet'" in _error({"model": {"trunk": {"name": "resnet"}}})
    assert "data.dataset: unknown data set 'mnist'" in _error({"data": {"dataset": "mnist"}})


def test_section_level_errors_name_the_field_not_the_top_level():
    message = _error({"tasks": TASKS, "selection": {"weights": {"a": 1, "c": 2}}})
    assert "selection.weights: names unknown tasks ['c']" in message and "(top level)" not in message
    assert "selection.weights: score 'weighted' needs" in _error({"selection": {"score": "weighted"}})
    assert "tasks: task names must be unique; repeated: ['a']" in _error({"tasks": [TASKS[0], TASKS[0]]})
    assert "tasks: a table needs tasks" in _error({"data": TABLE})
    assert "data.sources: is empty" in _error({"data": {"sources": []}})
    two_tables = {"sources": [{"name": "x", **TABLE}, {"name": "y", **TABLE}]}
    assert "tasks[0].source: name the source holding column 'a'" in _error({"data": two_tables, "tasks": TASKS})


def test_split_stratify_is_a_validated_boolean_set_in_one_place():
    assert parse_config({}).data.split.stratify is True
    assert parse_config({"data": {"split": {"stratify": False}}}).data.split.stratify is False
    assert "data.split.stratify: Input should be a valid boolean" in _error({"data": {"split": {"stratify": "no"}}})
    assert "data.split.shuffle: unknown key" in _error({"data": {"split": {"shuffle": True}}})
    refused = _error({"data": {"dataset": "synthetic", "options": {"stratify": False}}})
    assert "data.options.stratify: not an option" in refused and "data.split.stratify" in refused


def test_an_empty_task_list_is_refused_with_its_field():
    assert "  tasks: is empty; list at least one task" in _error({"data": {"dataset": "synthetic"}, "tasks": []})


def test_target_transforms_are_checked_against_the_task_kind():
    def task(**fields):
        return {"data": {"dataset": "synthetic"}, "tasks": [{"name": "t", "target": "y1", **fields}]}

    threshold = parse_config(task(kind="binary", transform={"threshold": 0})).tasks[0].target_transform()
    assert threshold.threshold == 0 and threshold.bins is None
    bins = parse_config(task(kind="multiclass", num_outputs=3, transform={"bins": [0, 10]})).tasks[0]
    assert bins.target_transform().bins == (0.0, 10.0)
    assert "tasks[0].kind: transform.threshold makes a binary label" in _error(task(kind="regression",
                                                                                   transform={"threshold": 0}))
    assert "tasks[0].num_outputs: transform.bins [0.0, 10.0] make 3 classes; set num_outputs: 3" in _error(
        task(kind="multiclass", transform={"bins": [0, 10]}))
    assert "tasks[0].transform.bins: must be strictly increasing" in _error(
        task(kind="multiclass", num_outputs=3, transform={"bins": [10, 0]}))
    assert "tasks[0].transform: give exactly one of threshold" in _error(
        task(kind="binary", transform={"threshold": 0, "bins": [1]}))
    assert "tasks[0].transform.threshold: Input should be a valid number" in _error(
        task(kind="binary", transform={"threshold": "zero"}))
