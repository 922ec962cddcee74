"""The per-task ``auxiliary`` block: validated on load, and the runner wraps the configured balancer with it."""
import pytest

from taskloom import Task
from taskloom.balancing.auxiliary_weighting import AuxiliarySpec, AuxiliaryWeighting
from taskloom.config import ConfigError, parse_config
from taskloom.train.runner import build_balancer_with_auxiliaries


def _config(aux_block, role="auxiliary", method="dwa"):
    return parse_config({
        "data": {"dataset": "synthetic"},
        "balancing": {"method": method},
        "tasks": [{"name": "y", "kind": "regression", "target": "y"},
                  {"name": "a", "kind": "regression", "target": "a", "role": role, "auxiliary": aux_block}],
    })


def test_auxiliary_options_on_a_main_task_are_refused_naming_it():
    with pytest.raises(ConfigError, match=r"tasks\[1\]\.auxiliary: task 'a' is a main task"):
        _config({"weight": 0.5}, role="main")


@pytest.mark.parametrize("block, field", [({"weight": -1}, "weight"), ({"schedule": "step"}, "schedule"),
                                          ({"gating": "always"}, "gating"), ({"wieght": 1}, "wieght")])
def test_bad_auxiliary_fields_are_refused_with_their_path(block, field):
    with pytest.raises(ConfigError, match=rf"tasks\[1\]\.auxiliary\.{field}"):
        _config(block)


def test_runner_wraps_the_configured_method_for_the_main_tasks():
    config = _config({"weight": 0.5, "schedule": "cosine", "gating": "weighted"})
    tasks = [Task("y", "regression"), Task("a", "regression", role="auxiliary")]
    balancer = build_balancer_with_auxiliaries(config, tasks)
    assert isinstance(balancer, AuxiliaryWeighting)
    assert type(balancer.inner).__name__ == "DynamicWeightAverage" and balancer.inner.task_names == ["y"]
    assert balancer.auxiliary == {"a": AuxiliarySpec(0.5, "cosine", "weighted")}


def test_without_auxiliary_blocks_the_method_is_unwrapped():
    config = parse_config({"data": {"dataset": "synthetic"}, "tasks": [
        {"name": "y", "kind": "regression", "target": "y"},
        {"name": "a", "kind": "regression", "target": "a", "role": "auxiliary"}]})
    tasks = [Task("y", "regression"), Task("a", "regression", role="auxiliary")]
    assert not isinstance(build_balancer_with_auxiliaries(config, tasks), AuxiliaryWeighting)


def test_a_config_with_auxiliaries_survives_the_run_directory_round_trip():
    import yaml

    from taskloom.config import dump_config

    config = parse_config({
        "data": {"dataset": "table", "options": {"path": "t.csv"}},
        "tasks": [{"name": "y", "kind": "binary", "target": "y"},
                  {"name": "a", "kind": "regression", "target": "a", "role": "auxiliary",
                   "auxiliary": {"weight": 0.5, "gating": "weighted"}}],
        "auxiliaries": [{"kind": "reconstruct", "mask": 0.25}, {"kind": "feature", "column": "age"}],
    })
    again = parse_config(yaml.safe_load(dump_config(config)))
    assert again == config
    assert [a.task_name for a in again.auxiliaries] == ["aux_reconstruct", "aux_feature_age"]
