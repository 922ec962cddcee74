"""What ``taskloom auto`` searches over, and how one trial's choices become a config.

The space: sharing architecture, balancing method, number of task groups (chosen by TAG
affinity, Fifty et al. 2021), a static loss weight per auxiliary task, and the learning rate
(log-uniform, as in Bergstra & Bengio 2012). Candidate names are checked against the registries.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from taskloom.config import Config, ConfigError, parse_config
from taskloom.train.grid import resolve_architectures, resolve_methods

DEFAULT_ARCHITECTURES = ("hard", "mmoe", "ple")
BRANCHING_TRUNKS = ("mlp",)  # trunks whose linear layers the branching architecture can split
DEFAULT_METHODS = ("equal", "uncertainty", "dwa", "famo", "pcgrad", "upgrad")
AUXILIARY_PREFIX = "aux_weight:"


@dataclass
class SearchSpace:
    """The candidates of one search; ``auxiliary`` names the config's auxiliary tasks (weights searched)."""

    architectures: list[str] = field(default_factory=lambda: list(DEFAULT_ARCHITECTURES))
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    groups: list[int] = field(default_factory=lambda: [1])
    lr: tuple[float, float] = (1e-4, 1e-1)
    auxiliary: list[str] = field(default_factory=list)
    auxiliary_weight: tuple[float, float] = (0.05, 2.0)

    def check(self, main_tasks: int) -> None:
        """Refuse unknown names and impossible ranges, naming the option to fix."""
        self.architectures = resolve_architectures(self.architectures)
        self.methods = resolve_methods(self.methods)
        low, high = self.lr
        if not (0 < low < high and math.isfinite(high)):
            raise ConfigError(f"--lr: need 0 < low < high, got {low:g}..{high:g}")
        low, high = self.auxiliary_weight
        if not (0 < low < high and math.isfinite(high)):
            raise ConfigError(f"--aux-weight: need 0 < low < high, got {low:g}..{high:g}")
        if not self.groups or any(n < 1 for n in self.groups):
            raise ConfigError(f"--groups: numbers of task groups must be at least 1, got {self.groups}")
        self.groups = sorted(set(self.groups))
        if any(n > 1 for n in self.groups) and main_tasks + len(self.auxiliary) < 3:
            raise ConfigError("--groups: grouping needs at least 3 tasks; drop --groups")

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def default_space(config: Config) -> SearchSpace:
    """The default candidates for ``config``: branching (Lu et al. 2017) joins them where its trunk can be split."""
    space = SearchSpace()
    if config.model.trunk.name in BRANCHING_TRUNKS:
        space.architectures.append("branching")
    return space


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """One trial's choices; an auxiliary weight is searched only where the method weights losses statically."""
    params: dict[str, Any] = {
        "architecture": trial.suggest_categorical("architecture", space.architectures),
        "balancing": trial.suggest_categorical("balancing", space.methods),
        "lr": trial.suggest_float("lr", *space.lr, log=True),
    }
    if space.groups != [1]:
        params["groups"] = trial.suggest_categorical("groups", space.groups)
    if params["balancing"] in ("equal", "static"):
        for name in space.auxiliary:
            params[AUXILIARY_PREFIX + name] = trial.suggest_float(AUXILIARY_PREFIX + name, *space.auxiliary_weight,
                                                                  log=True)
    return params


def auxiliary_weights(params: Mapping[str, Any]) -> dict[str, float]:
    """The auxiliary task weights of a trial's params (empty when none were searched)."""
    return {k[len(AUXILIARY_PREFIX):]: float(v) for k, v in params.items() if k.startswith(AUXILIARY_PREFIX)}


def trial_config(config: Config, params: Mapping[str, Any], task_names: Sequence[str]) -> Config:
    """The config with a trial's architecture, balancing and learning rate; auxiliary weights make it static."""
    data = config.model_dump()
    if params["architecture"] != config.model.architecture:
        data["model"]["architecture"], data["model"]["options"] = params["architecture"], {}
    weights = auxiliary_weights(params)
    if weights:
        data["balancing"] = {"method": "static",
                             "options": {"weights": {name: weights.get(name, 1.0) for name in task_names}}}
    elif params["balancing"] != config.balancing.method:
        data["balancing"] = {"method": params["balancing"], "options": {}}
    data["optimizer"]["lr"] = float(params["lr"])
    data["tracking"]["measure"] = ["affinity"] if params.get("groups", 1) > 1 else []
    data["tracking"]["tensorboard"] = data["tracking"]["mlflow"] = False
    return parse_config(data, "the config of a search trial")
