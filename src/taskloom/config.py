"""Run configuration: a validated YAML file (pydantic); bad fields are refused with their path."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator,
)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names each bad field by its path."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConditionConfig(Strict):
    task: str
    equals: float


class TaskConfig(Strict):
    name: str = Field(min_length=1)
    kind: str
    target: str = Field(min_length=1, description="column or data-set target holding this task's labels")
    num_outputs: PositiveInt = 1
    class_weights: list[float] | None = None
    sample_weight: str | None = None
    main_metric: str | None = None
    only_where: ConditionConfig | None = None
    head_hidden: list[PositiveInt] = []
    source: str | None = Field(None, description="with data.sources: the table source holding this task's column")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        from taskloom.task import TASK_KINDS

        if kind not in TASK_KINDS:
            raise ValueError(f"unknown task kind {kind!r}; known: {', '.join(TASK_KINDS)}")
        return kind


class SourceConfig(Strict):
    """One of several data sets in a run; ``tasks`` picks which of its tasks it labels (default: all)."""

    name: str = Field(min_length=1)
    dataset: str
    options: dict[str, Any] = {}
    tasks: list[str] | None = None


class MixingConfig(Strict):
    """How batches are drawn from several sources (see :mod:`taskloom.data.mixing`)."""

    strategy: Literal["proportional", "temperature", "annealed", "given"] = "proportional"
    temperature: PositiveFloat = 2.0
    cap: PositiveInt | None = None
    probabilities: dict[str, float] | None = None
    homogeneous: bool = True


class DataConfig(Strict):
    dataset: str = "multimnist"
    options: dict[str, Any] = {}
    sources: list[SourceConfig] | None = None
    mixing: MixingConfig = MixingConfig()
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    split_seed: int = 0

    @model_validator(mode="after")
    def _sources(self) -> "DataConfig":
        if self.sources is None:
            return self
        if not self.sources:
            raise ValueError("sources is empty; list at least one source or remove the key")
        if self.options:
            raise ValueError("options belongs to dataset; with sources, give each source its own options")
        names = [s.name for s in self.sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"source names must be unique; repeated: {repeated}")
        if self.mixing.strategy == "given":
            given = self.mixing.probabilities or {}
            if sorted(given) != sorted(names):
                raise ValueError(f"mixing.probabilities must give one probability per source {names}; got {sorted(given)}")
        return self


class TrunkConfig(Strict):
    name: str = "mlp"
    options: dict[str, Any] = {}


class ModelConfig(Strict):
    architecture: str = "hard"
    trunk: TrunkConfig = TrunkConfig()
    options: dict[str, Any] = {}


class BalancingConfig(Strict):
    method: str = "equal"
    options: dict[str, Any] = {}


class RegularizerConfig(Strict):
    name: str
    options: dict[str, Any] = {}


class OptimizerConfig(Strict):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)


class ScheduleConfig(Strict):
    name: Literal["none", "cosine", "step"] = "none"
    step_size: PositiveInt = 10
    gamma: PositiveFloat = 0.1
    warmup_epochs: int = Field(0, ge=0)


class SelectionConfig(Strict):
    score: Literal["mean_relative", "weighted", "task"] = "mean_relative"
    weights: dict[str, float] | None = None
    task: str | None = None
    baselines: dict[str, float] | None = None

    @model_validator(mode="after")
    def _needs(self) -> "SelectionConfig":
        if self.score == "task" and not self.task:
            raise ValueError("score 'task' needs selection.task, the task whose main metric selects checkpoints")
        if self.score == "weighted" and not self.weights:
            raise ValueError("score 'weighted' needs selection.weights, one weight per task name")
        return self


class TrainConfig(Strict):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 128
    seed: int = 0
    device: str = "cpu"
    patience: PositiveInt | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    compile: bool = False
    num_threads: PositiveInt | None = None
    baselines: bool = False


class TrackingConfig(Strict):
    """Optional per-epoch analysis and experiment trackers, all off by default (they cost time).

    ``measure`` logs the gradient-conflict cosine matrix and/or TAG lookahead affinity of a
    multi-task model into metrics.jsonl, measured on every ``every``-th training step.
    """

    measure: list[Literal["conflict", "affinity"]] = []
    every: PositiveInt = 10
    tensorboard: bool = False
    mlflow: bool = False
    mlflow_tracking_uri: str | None = None


class Config(Strict):
    """Everything a run needs; every field has a default except the tasks of a table."""

    name: str = "run"
    data: DataConfig = DataConfig()
    tasks: list[TaskConfig] | None = None
    model: ModelConfig = ModelConfig()
    balancing: BalancingConfig = BalancingConfig()
    regularizers: list[RegularizerConfig] = []
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    selection: SelectionConfig = SelectionConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    output_dir: str = "runs"

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.tasks is not None:
            names = [t.name for t in self.tasks]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"task names must be unique; repeated: {duplicates}")
            for i, task in enumerate(self.tasks):
                if task.only_where is not None and task.only_where.task not in names:
                    raise ValueError(f"tasks[{i}].only_where.task {task.only_where.task!r} is not a task name")
            for field, keys in (("selection.weights", self.selection.weights), ("selection.baselines", self.selection.baselines)):
                unknown = sorted(set(keys or ()) - set(names))
                if unknown:
                    raise ValueError(f"{field} names unknown tasks {unknown}; tasks are {names}")
            if self.selection.task is not None and self.selection.task not in names:
                raise ValueError(f"selection.task {self.selection.task!r} is not a task name; tasks are {names}")
        sources = {s.name: s for s in self.data.sources or []}
        for i, task in enumerate(self.tasks or []):
            if task.source is not None and task.source not in sources:
                raise ValueError(f"tasks[{i}].source {task.source!r} is not a source name; sources are {sorted(sources)}")
            if task.source is None and sources:
                tables = [n for n, s in sources.items() if s.dataset == "table"]
                if len(tables) != 1:
                    raise ValueError(f"tasks[{i}].source: name the source holding column {task.target!r} "
                                     f"(table sources: {tables})")
        for name, source in sources.items():
            if source.dataset == "table" and not any(t.source in (name, None) for t in self.tasks or []):
                raise ValueError(f"data.sources: table source {name!r} needs tasks; list them with source: {name}")
        if self.tasks is None and not sources and self.data.dataset == "table":
            raise ValueError("a table needs tasks: list each task with its name, kind and target column")
        return self


def _path(location: tuple[Any, ...]) -> str:
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(raw: Any, source: str = "config") -> Config:
    """Validate a mapping as a :class:`Config`; raise :class:`ConfigError` listing each bad field's path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (data, tasks, model, ...)")
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown key; check its spelling against the documented fields"
            lines.append(f"  {_path(item['loc'])}: {message}")
        raise ConfigError(f"{source} is not a valid taskloom config:\n" + "\n".join(lines)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    return parse_config(raw, str(path))


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
