"""The config of a model trained without some auxiliary tasks, whether listed in ``tasks`` or built in.

An auxiliary ablation ("does X help?", Caruana 1997 judged each extra output by training without it)
must change only X's loss: the remaining auxiliaries keep their ``auxiliary`` weighting blocks
(weight, schedule, gating), and a withheld ``feature`` column stays withheld from the inputs (it
moves to ``data.options.exclude``, or leaves ``data.options.features``), so with and without X see
the same inputs. Dropping a ``reconstruct`` auxiliary also drops its input mask: the model without
it trains on whole rows, as a user who never asked for reconstruction would.
"""
from __future__ import annotations

from typing import Any, Collection, Mapping

from taskloom.config import Config, ConfigError, parse_config


def builtin_auxiliary_names(config: Config) -> list[str]:
    """The task names of the config's built-in ``auxiliaries`` (aux_reconstruct, aux_feature_<column>)."""
    return [auxiliary.task_name for auxiliary in config.auxiliaries]


def masking_auxiliaries(config: Config, names: Collection[str]) -> tuple[str, ...]:
    """Those of ``names`` that are reconstruct auxiliaries with a mask: dropping them changes the training inputs."""
    return tuple(a.task_name for a in config.auxiliaries
                 if a.kind == "reconstruct" and a.mask > 0 and a.task_name in set(names))


def config_without(config: Config, names: Collection[str], source: str = "an auxiliary ablation") -> Config:
    """``config`` without the auxiliary tasks ``names``: from ``tasks`` (role auxiliary) or ``auxiliaries``.

    Settings that name a dropped task (selection weights and baselines, architecture options, curriculum
    order / probabilities / schedule) forget it; everything else, the other auxiliaries' weighting
    included, is kept. A name that is no auxiliary task of the config is refused.
    """
    drop = set(names)
    if not drop:
        return config
    listed = {t.name: t for t in config.tasks or []}
    builtin = {a.task_name: a for a in config.auxiliaries}
    for name in sorted(drop):
        if name in builtin or (name in listed and listed[name].role == "auxiliary"):
            continue
        known = sorted([n for n, t in listed.items() if t.role == "auxiliary"] + list(builtin))
        raise ConfigError(f"{source}: {name!r} is no auxiliary task of the config; its auxiliary tasks are {known}")
    data = config.model_dump()
    if config.tasks is not None:
        data["tasks"] = [t for t in data["tasks"] if t["name"] not in drop]
    data["auxiliaries"] = [a for a in data["auxiliaries"] if _task_name(a) not in drop]
    options = data["data"]["options"]
    for auxiliary in config.auxiliaries:
        if auxiliary.task_name in drop and auxiliary.kind == "feature":
            _keep_withheld(options, auxiliary.column)
    selection = data["selection"]
    if selection.get("weights"):
        selection["weights"] = {t: w for t, w in selection["weights"].items() if t not in drop} or None
    if selection.get("baselines"):
        selection["baselines"] = {t: v for t, v in selection["baselines"].items() if t not in drop} or None
    data["model"]["options"] = _forget(data["model"]["options"], drop)
    if data.get("curriculum"):
        data["curriculum"] = _forget(data["curriculum"], drop)
    return parse_config(data, f"the config of {source}")


def _task_name(auxiliary: Mapping[str, Any]) -> str:
    """The task name of a dumped built-in auxiliary (the rule of ``BuiltinAuxiliaryConfig.task_name``)."""
    return "aux_reconstruct" if auxiliary["kind"] == "reconstruct" else f"aux_feature_{auxiliary['column']}"


def _keep_withheld(options: dict[str, Any], column: str | None) -> None:
    """The table options with ``column`` still kept out of the inputs once its feature auxiliary is gone."""
    if options.get("features") is not None:
        options["features"] = [c for c in options["features"] if c != column]
    elif column not in (options.get("exclude") or []):
        options["exclude"] = [*(options.get("exclude") or []), column]


def _forget(options: Mapping[str, Any], drop: Collection[str]) -> dict[str, Any]:
    """Options with dropped task names removed from task-keyed mappings and task lists (one level deep)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping) and value and set(value) & set(drop):
            value = {t: v for t, v in value.items() if t not in drop}
        elif isinstance(value, list) and any(isinstance(v, str) and v in drop for v in value):
            value = [v for v in value if v not in drop]
        out[key] = value
    return out
