"""Run configuration: a validated YAML file (pydantic); bad fields are refused with their path.

Types are strict (``epochs: true`` or ``epochs: "3"`` is refused; a whole number is a valid
float), and the ``options`` of a data set, architecture, balancing method or regularizer are
checked against the signature of what they configure, so a typo fails on load, not mid-run.
"""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator,
)

from taskloom.train.options import AMP_MODES, OPTIMIZERS, SCHEDULES


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names each bad field by its path."""


class FieldError(ValueError):
    """A validator's error about the field at ``path``, relative to the section that raised it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


REGISTRIES = {
    "data set": ("taskloom.data.datasets", "DATASETS"),
    "architecture": ("taskloom.sharing", "ARCHITECTURES"),
    "trunk": ("taskloom.trunks", "TRUNKS"),
    "method": ("taskloom.balancing", "BALANCERS"),
    "regularizer": ("taskloom.regularizers", "REGULARIZERS"),
}


def _registry(kind: str) -> Any:
    """The registry of ``kind``, imported when first needed (the registries import torch and the data sets)."""
    module, name = REGISTRIES[kind]
    return getattr(importlib.import_module(module), name)


def _known(kind: str, name: str, field: str) -> Any:
    """The object registered as ``name``; a FieldError at ``field`` listing what exists otherwise."""
    registry = _registry(kind)
    if name not in registry:
        raise FieldError(field, f"unknown {registry.what} {name!r}; known: {', '.join(registry)}")
    return registry.get(name)


def check_options(target: Callable[..., Any], options: Mapping[str, Any], path: str, owner: str,
                  filled: Mapping[str, str]) -> None:
    """Refuse an option ``target`` does not take, or a required one left out, with a FieldError at its path.

    ``filled`` maps the parameters taskloom passes itself to the field that sets each ("" when none does).
    """
    parameters = inspect.signature(target).parameters
    named = {n: p for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    variadic = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    known = ", ".join(n for n in named if n not in filled) or "none"
    for key in options:
        if key in filled:
            source = f"; set it with {filled[key]}" if filled[key] else ""
            raise FieldError(f"{path}.{key}", f"not an option: taskloom passes {key} to {owner} itself{source}")
        if key not in named and not variadic:
            raise FieldError(f"{path}.{key}", f"unknown option; known: {known} ({owner})")
    for name, parameter in named.items():
        if parameter.default is parameter.empty and name not in filled and name not in options:
            raise FieldError(f"{path}.{name}", f"required by {owner}")


DATA_FILLED = {"tasks": "tasks", "val_fraction": "data.val_fraction", "test_fraction": "data.test_fraction",
               "seed": "data.split_seed", "stratify": "data.split.stratify",
               "split_key": "data.split.key"}


def _check_dataset(dataset: str, options: Mapping[str, Any]) -> None:
    loader = _known("data set", dataset, "dataset")
    check_options(loader, options, "options", f"data set {dataset}", DATA_FILLED)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class ConditionConfig(Strict):
    task: str
    equals: float


class TransformConfig(Strict):
    """A label from a numeric column: ``threshold`` t (binary, 1 where value > t) or ``bins`` (multiclass edges)."""

    threshold: float | None = None
    bins: list[float] | None = None

    @model_validator(mode="after")
    def _one(self) -> "TransformConfig":
        if (self.threshold is None) == (self.bins is None):
            raise FieldError("", "give exactly one of threshold (binary: value > threshold) or bins (multiclass edges)")
        if self.bins is not None and (not self.bins or any(b <= a for a, b in zip(self.bins, self.bins[1:]))):
            raise FieldError("bins", f"must be strictly increasing edges, got {self.bins}")
        return self


class AuxiliaryConfig(Strict):
    """An auxiliary task's loss weight: ``weight`` decayed by ``schedule`` over training, times a gradient-similarity
    gate (Du et al. 2018; see :mod:`taskloom.balancing.auxiliary_weighting`)."""

    weight: float = Field(1.0, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    gating: Literal["none", "unweighted", "weighted"] = "none"


class BuiltinAuxiliaryConfig(AuxiliaryConfig):
    """An auxiliary task made from the inputs, needing no labels (see :mod:`taskloom.data.auxiliaries`).

    ``reconstruct`` (task ``aux_reconstruct``): predict the standardized inputs; ``mask`` zeroes that fraction
    of each training row's inputs (seeded by ``seed``). ``feature`` (task ``aux_feature_<column>``, tables only):
    ``column`` is withheld from the inputs and predicted as ``task_kind`` (``num_outputs`` classes for multiclass).
    """

    kind: Literal["reconstruct", "feature"]
    mask: float = Field(0.0, ge=0, lt=1)
    seed: int = 0
    column: str | None = None
    task_kind: Literal["regression", "binary", "multiclass"] = "regression"
    num_outputs: PositiveInt = 1

    @model_validator(mode="after")
    def _fields_of_kind(self) -> "BuiltinAuxiliaryConfig":
        if self.kind == "feature" and not self.column:
            raise FieldError("column", "a feature auxiliary needs column: the input column to withhold and predict")
        if self.kind == "reconstruct" and self.column is not None:
            raise FieldError("column", "reconstruct predicts every input; column belongs to kind: feature")
        if self.kind == "feature" and self.mask:
            raise FieldError("mask", "mask belongs to kind: reconstruct")
        if self.task_kind == "multiclass" and self.num_outputs < 2:
            raise FieldError("num_outputs", "a multiclass feature needs num_outputs >= 2 (its number of classes)")
        return self

    @property
    def task_name(self) -> str:
        """The name of the task this auxiliary adds."""
        return "aux_reconstruct" if self.kind == "reconstruct" else f"aux_feature_{self.column}"


class TaskConfig(Strict):
    name: str = Field(min_length=1)
    kind: str
    role: Literal["main", "auxiliary"] = Field(
        "main", description="auxiliary: trained to help the main tasks, left out of delta-m")
    target: str = Field(min_length=1, description="column or data-set target holding this task's labels")
    num_outputs: PositiveInt = 1
    class_weights: list[float] | None = None
    sample_weight: str | None = None
    main_metric: str | None = None
    only_where: ConditionConfig | None = None
    head_hidden: list[PositiveInt] = []
    source: str | None = Field(None, description="with data.sources: the table source holding this task's column")
    transform: TransformConfig | None = Field(None, description="make the label from a numeric column")
    decision_threshold: float | Literal["f1"] = Field(
        0.5, description="binary tasks: probability above which a row is predicted 1, or f1 (chosen on validation)")
    auxiliary: AuxiliaryConfig | None = Field(None, description="role auxiliary: its loss weight, schedule, gating")

    @model_validator(mode="after")
    def _auxiliary_options(self) -> "TaskConfig":
        if self.auxiliary is not None and self.role != "auxiliary":
            raise FieldError("auxiliary", f"task {self.name!r} is a main task; auxiliary options need "
                                          "role: auxiliary (or remove the auxiliary block)")
        return self

    @model_validator(mode="after")
    def _transform_fits(self) -> "TaskConfig":
        transform = self.transform
        if transform is None:
            return self
        if transform.threshold is not None and self.kind != "binary":
            raise FieldError("kind", f"transform.threshold makes a binary label (value > {transform.threshold}); "
                                     f"set kind: binary, not {self.kind}")
        if transform.bins is not None:
            if self.kind != "multiclass":
                raise FieldError("kind", f"transform.bins makes one class per interval; set kind: multiclass, "
                                         f"not {self.kind}")
            if self.num_outputs != len(transform.bins) + 1:
                raise FieldError("num_outputs", f"transform.bins {transform.bins} make {len(transform.bins) + 1} "
                                                f"classes; set num_outputs: {len(transform.bins) + 1}")
        return self

    def target_transform(self) -> Any:
        """The :class:`~taskloom.task.TargetTransform` this task's ``transform`` describes (None without one)."""
        from taskloom.task import TargetTransform

        if self.transform is None:
            return None
        bins = None if self.transform.bins is None else tuple(self.transform.bins)
        return TargetTransform(threshold=self.transform.threshold, bins=bins)

    @model_validator(mode="after")
    def _threshold(self) -> "TaskConfig":
        threshold = self.decision_threshold
        if threshold != 0.5 and self.kind != "binary":
            raise FieldError("decision_threshold", f"only a binary task has a decision threshold; {self.name!r} is "
                                                   f"{self.kind}")
        if isinstance(threshold, float) and not 0 < threshold < 1:
            raise FieldError("decision_threshold", f"must be a probability strictly between 0 and 1 or 'f1', "
                                                   f"got {threshold}")
        return self

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

    @model_validator(mode="after")
    def _options(self) -> "SourceConfig":
        if self.tasks is not None and not self.tasks:
            raise FieldError("tasks", "is empty; name at least one of the source's tasks, or remove the key for all")
        _check_dataset(self.dataset, self.options)
        return self


class MixingConfig(Strict):
    """How batches are drawn from several sources (see :mod:`taskloom.data.mixing`)."""

    strategy: Literal["proportional", "temperature", "annealed", "given"] = "proportional"
    temperature: PositiveFloat = 2.0
    cap: PositiveInt | None = None
    probabilities: dict[str, float] | None = None
    homogeneous: bool = True


class SplitConfig(Strict):
    """How rows are split: ``stratify`` (default) keeps each task's label shares in every split.

    ``key``: a table column whose hash (with ``data.split_seed``) decides each row's split
    (:mod:`taskloom.data.hash_split`): stable without loading the table. A hash split (a key, or
    ``data.streaming``, which splits by row position without a key) is never stratified, whatever
    ``stratify`` says.
    """

    stratify: bool = True
    key: str | None = None


class StreamingConfig(Strict):
    """How a streamed table is read (``data.streaming: true``; see :mod:`taskloom.data.streaming`).

    ``shuffle_buffer``: training rows mixed at a time (at least the training split's size gives the
    in-memory order); ``read_rows``: rows per record batch read; ``reference_rows``: training rows
    held in memory for the reference scores and data checks.
    """

    shuffle_buffer: PositiveInt = 100_000
    read_rows: PositiveInt = 65_536
    reference_rows: PositiveInt = 50_000


class DataConfig(Strict):
    dataset: str = "multimnist"
    options: dict[str, Any] = {}
    sources: list[SourceConfig] | None = None
    mixing: MixingConfig = MixingConfig()
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    split_seed: int = 0
    split: SplitConfig = SplitConfig()
    streaming: bool = False
    streaming_options: StreamingConfig = StreamingConfig()

    @model_validator(mode="after")
    def _sources(self) -> "DataConfig":
        self._check_hash_split()
        if self.sources is None:
            _check_dataset(self.dataset, self.options)
            return self
        if not self.sources:
            raise FieldError("sources", "is empty; list at least one source or remove the key")
        if self.options:
            raise FieldError("options", "options belongs to dataset; with sources, give each source its own options")
        names = [s.name for s in self.sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise FieldError("sources", f"source names must be unique; repeated: {repeated}")
        if self.mixing.strategy == "given":
            given = self.mixing.probabilities or {}
            if sorted(given) != sorted(names):
                raise FieldError("mixing.probabilities",
                                 f"must give one probability per source {names}; got {sorted(given)}")
        return self

    def _check_hash_split(self) -> None:
        """Streaming and ``split.key`` need one table; they split by hash, never stratified (``stratify`` is unused)."""
        if self.streaming and (self.sources is not None or self.dataset != "table"):
            raise FieldError("streaming", "streams only the table data set (one CSV or Parquet file or directory, "
                                          "no sources); set streaming: false or use dataset: table")
        if self.split.key is not None and (self.sources is not None or self.dataset != "table"):
            raise FieldError("split.key", "names a column of the table data set; remove it for other data sets")
        if self.streaming and "path" not in self.options:
            raise FieldError("options.path", "streaming needs the path of a CSV or Parquet file or directory")


class TrunkConfig(Strict):
    """The trunk; its options are checked once the data has given its shape arguments (see the runner)."""

    name: str = "mlp"
    options: dict[str, Any] = {}

    @model_validator(mode="after")
    def _registered(self) -> "TrunkConfig":
        _known("trunk", self.name, "name")
        return self


class ModelConfig(Strict):
    architecture: str = "hard"
    trunk: TrunkConfig = Field(default_factory=TrunkConfig)
    options: dict[str, Any] = {}
    checkpointing: bool = Field(False, description="recompute the shared trunk's activations during backward "
                                                   "(less memory, one more trunk forward per backward pass)")

    @model_validator(mode="after")
    def _options(self) -> "ModelConfig":
        builder = _known("architecture", self.architecture, "architecture")
        check_options(builder, self.options, "options", f"architecture {self.architecture}",
                      {"trunk_factory": "model.trunk", "tasks": "tasks"})
        if self.checkpointing:
            from taskloom.sharing.checkpointing import UNCHECKPOINTED

            name = self.options.get("base", "hard") if self.architecture == "adversarial" else self.architecture
            if name in UNCHECKPOINTED:
                raise FieldError("checkpointing", f"architecture {name} cannot checkpoint activations: "
                                                  f"{UNCHECKPOINTED[name]}; set checkpointing: false or use hard, "
                                                  "hybrid, low_level, cascade or mmoe")
        return self


class BalancingConfig(Strict):
    method: str = "equal"
    options: dict[str, Any] = {}

    @model_validator(mode="after")
    def _options(self) -> "BalancingConfig":
        method = _known("method", self.method, "method")
        if "mode" in self.options and "mode" not in inspect.signature(method).parameters:
            registry = _registry("method")
            gradient = [n for n in registry if "mode" in inspect.signature(registry.get(n)).parameters]
            raise FieldError("options.mode", f"{self.method} weights the task losses and has no gradient mode; "
                                             f"mode (parameters or representation) is an option of the "
                                             f"gradient-level methods: {', '.join(gradient)}")
        modes = getattr(method, "modes", None)
        if modes is not None and "mode" in self.options and self.options["mode"] not in modes:
            raise FieldError("options.mode", f"{self.method} supports mode {' or '.join(modes)} only, "
                                             f"got {self.options['mode']!r}")
        check_options(method, self.options, "options", f"method {self.method}", {"task_names": "tasks"})
        if "engine" in self.options:
            _check_engine(self.method, method, self.options)
        return self


def _check_engine(name: str, method: Any, options: Mapping[str, Any]) -> None:
    """``balancing.options.engine``: a known engine, and ``gramian`` only where the layer Gramian engine applies."""
    from taskloom.balancing.layer_gramian import ENGINES

    engine = options["engine"]
    if not isinstance(engine, str) or engine not in ENGINES:
        raise FieldError("options.engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "gramian":
        return
    if not getattr(method, "weights_from_gram", False):
        raise FieldError("options.engine", f"{name}'s update is not a function of the task gradients' Gramian, "
                                           "so it cannot use the layer Gramian engine; use auto or jacobian")
    mode = options.get("mode", inspect.signature(method).parameters["mode"].default)
    if mode != "parameters":
        raise FieldError("options.engine", "gramian is for mode parameters (representation mode already works "
                                           "on the representation's small Gramian); use auto")
    if options.get("task_chunk") is not None:
        raise FieldError("options.engine", "gramian and task_chunk are two different engines; give one of them")


class RegularizerConfig(Strict):
    name: str
    options: dict[str, Any] = {}

    @model_validator(mode="after")
    def _options(self) -> "RegularizerConfig":
        regularizer = _known("regularizer", self.name, "name")
        check_options(regularizer, self.options, "options", f"regularizer {self.name}", {"model": ""})
        return self


class OptimizerConfig(Strict):
    name: Literal[OPTIMIZERS] = "adamw"  # type: ignore[valid-type]
    lr: PositiveFloat = 1e-3
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)


class ScheduleConfig(Strict):
    name: Literal[SCHEDULES] = "none"  # type: ignore[valid-type]
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
            raise FieldError("task",
                             "score 'task' needs selection.task, the task whose main metric selects checkpoints")
        if self.score == "weighted" and not self.weights:
            raise FieldError("weights", "score 'weighted' needs selection.weights, one weight per task name")
        return self


class TrainConfig(Strict):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 128
    seed: int = 0
    device: str = "cpu"
    patience: PositiveInt | None = None
    amp: Literal[AMP_MODES] = "none"  # type: ignore[valid-type]
    compile: bool = False
    num_threads: PositiveInt | None = None
    baselines: bool = False
    auxiliary_ablations: bool = Field(
        True, description="with baselines: also train the multi-task model without each auxiliary task (and "
                          "without all of them) to judge whether each auxiliary helps the main tasks")
    accumulate: PositiveInt = Field(1, description="micro-batches of batch_size rows per optimizer step; the "
                                                   "step equals one step on their concatenation")


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


class CurriculumConfig(Strict):
    """Task curricula (Pentina et al. 2015; see :mod:`taskloom.train.curriculum`), one ``mode``:

    ``order``: tasks join in ``order``, one more every ``every`` epochs (tasks not listed train from
    the first epoch); ``sampling``: each step includes each task with its probability, constant
    (``probabilities``) or linear over epochs (``schedule``: task -> [start, end]; tasks not named: 1);
    ``sequential``: one task after another (``order``: a list or ``auto``), each pulled toward the
    previous task's solution with ``strength`` lambda, for ``epochs_per_task`` (default train.epochs);
    ``keep: per_task`` (default, the paper) answers each task with its own stage's model (K copies of the
    shared parameters), ``keep: shared`` with the one model the last stage leaves.
    """

    mode: Literal["order", "sampling", "sequential"]
    order: list[str] | Literal["auto"] | None = None
    every: PositiveInt | None = None
    probabilities: dict[str, float] | None = None
    schedule: dict[str, list[float]] | None = None
    strength: float | None = Field(None, ge=0)
    epochs_per_task: PositiveInt | None = None
    auto_steps: PositiveInt | None = Field(None, description="sequential, order auto: steps of each candidate's "
                                                              "short fit (default 20)")
    keep: Literal["per_task", "shared"] | None = Field(
        None, description="sequential: per_task (default) keeps each task's stage model, one copy of the shared "
                          "parameters per task; shared keeps one model, moved by every stage")

    @model_validator(mode="after")
    def _fits_mode(self) -> "CurriculumConfig":
        allowed = {"order": {"order", "every"}, "sampling": {"probabilities", "schedule"},
                   "sequential": {"order", "strength", "epochs_per_task", "auto_steps", "keep"}}[self.mode]
        for key in ("order", "every", "probabilities", "schedule", "strength", "epochs_per_task", "auto_steps",
                    "keep"):
            if getattr(self, key) is not None and key not in allowed:
                raise FieldError(key, f"is not an option of mode {self.mode}; it takes {', '.join(sorted(allowed))}")
        if self.mode in ("order", "sequential") and self.order is None:
            raise FieldError("order", f"mode {self.mode} needs order, a list of task names"
                                      + (" or auto" if self.mode == "sequential" else ""))
        if self.mode == "order" and self.order == "auto":
            raise FieldError("order", "auto is an order of mode sequential; list the task names for mode order")
        if isinstance(self.order, list):
            if not self.order:
                raise FieldError("order", "is empty; list at least one task name")
            repeated = sorted({n for n in self.order if self.order.count(n) > 1})
            if repeated:
                raise FieldError("order", f"names a task more than once: {repeated}")
        if self.auto_steps is not None and self.order != "auto":
            raise FieldError("auto_steps", "is used by order: auto only; remove it or set order: auto")
        if self.mode == "sampling":
            if (self.probabilities is None) == (self.schedule is None):
                raise FieldError("probabilities", "mode sampling needs exactly one of probabilities (task -> p) or "
                                                  "schedule (task -> [start, end])")
            for name, p in (self.probabilities or {}).items():
                if not 0 < p <= 1:
                    raise FieldError(f"probabilities.{name}", f"must be a probability in (0, 1] (0 never trains "
                                                              f"the task: remove it from tasks), got {p}")
            for name, ends in (self.schedule or {}).items():
                if len(ends) != 2 or not all(0 <= p <= 1 for p in ends) or max(ends) == 0:
                    raise FieldError(f"schedule.{name}", f"must be [start, end], two probabilities in [0, 1], "
                                                         f"not both 0; got {ends}")
        return self

    def named_tasks(self) -> list[tuple[str, str]]:
        """``(field path, task name)`` of every task this curriculum names."""
        if isinstance(self.order, list):
            return [(f"order[{i}]", name) for i, name in enumerate(self.order)]
        given = self.probabilities if self.probabilities is not None else self.schedule or {}
        key = "probabilities" if self.probabilities is not None else "schedule"
        return [(f"{key}.{name}", name) for name in given]

    def check_tasks(self, names: list[str], epochs: int) -> None:
        """Refuse (FieldError at its path) a task name not among ``names``, or an order whose last task
        would join after the last of ``epochs``."""
        for path, name in self.named_tasks():
            if name not in names:
                raise FieldError(path, f"{name!r} is not a task name; tasks are {names}")
        if self.mode == "sequential" and isinstance(self.order, list) and sorted(self.order) != sorted(names):
            raise FieldError("order", f"mode sequential trains the tasks one after another: list every task once "
                                      f"({names}), or write order: auto; missing: "
                                      f"{[n for n in names if n not in self.order]}")
        if self.mode == "order" and (len(self.order) - 1) * self.every >= epochs:
            raise FieldError("every", f"the last of {len(self.order)} tasks would join at epoch "
                                      f"{(len(self.order) - 1) * self.every + 1}, after the last epoch ({epochs}); "
                                      f"lower every or raise train.epochs")

    @model_validator(mode="after")
    def _defaults(self) -> "CurriculumConfig":
        if self.mode == "order" and self.every is None:
            self.__dict__["every"] = 1
        if self.mode == "sequential" and self.strength is None:
            self.__dict__["strength"] = 1.0
        if self.mode == "sequential" and self.keep is None:
            self.__dict__["keep"] = "per_task"
        return self


class Config(Strict):
    """Everything a run needs; every field has a default except the tasks of a table."""

    name: str = "run"
    data: DataConfig = Field(default_factory=DataConfig)
    tasks: list[TaskConfig] | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    balancing: BalancingConfig = Field(default_factory=BalancingConfig)
    regularizers: list[RegularizerConfig] = []
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    selection: SelectionConfig = SelectionConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    auxiliaries: list[BuiltinAuxiliaryConfig] = Field(
        [], description="auxiliary tasks made from the inputs: reconstruct, or a withheld feature column")
    curriculum: CurriculumConfig | None = None
    output_dir: str = "runs"

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.tasks is not None and not self.tasks:
            raise FieldError("tasks", "is empty; list at least one task (name, kind, target), or remove the key "
                                      "to use the data set's default tasks")
        if self.tasks is not None:
            names = [t.name for t in self.tasks]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise FieldError("tasks", f"task names must be unique; repeated: {duplicates}")
            for i, task in enumerate(self.tasks):
                if task.only_where is not None and task.only_where.task not in names:
                    raise FieldError(f"tasks[{i}].only_where.task",
                                     f"{task.only_where.task!r} is not a task name; tasks are {names}")
            for field, keys in (("selection.weights", self.selection.weights), ("selection.baselines", self.selection.baselines)):
                unknown = sorted(set(keys or ()) - set(names))
                if unknown:
                    raise FieldError(field, f"names unknown tasks {unknown}; tasks are {names}")
            if self.selection.task is not None and self.selection.task not in names:
                raise FieldError("selection.task", f"{self.selection.task!r} is not a task name; tasks are {names}")
        self._check_auxiliaries()
        if self.tasks is not None and self.curriculum is not None:
            try:
                self.curriculum.check_tasks([t.name for t in self.tasks], self.train.epochs)
            except FieldError as error:
                raise FieldError(f"curriculum.{error.path}", str(error)) from None
        sources = {s.name: s for s in self.data.sources or []}
        for i, task in enumerate(self.tasks or []):
            if task.source is not None and task.source not in sources:
                raise FieldError(f"tasks[{i}].source",
                                 f"{task.source!r} is not a source name; sources are {sorted(sources)}")
            if task.source is None and sources:
                tables = [n for n, s in sources.items() if s.dataset == "table"]
                if len(tables) != 1:
                    raise FieldError(f"tasks[{i}].source",
                                     f"name the source holding column {task.target!r} (table sources: {tables})")
        for i, (name, source) in enumerate(sources.items()):
            if source.dataset == "table" and not any(t.source in (name, None) for t in self.tasks or []):
                raise FieldError(f"data.sources[{i}]",
                                 f"table source {name!r} needs tasks; list them with source: {name}")
        if self.tasks is None and not sources and self.data.dataset == "table":
            raise FieldError("tasks", "a table needs tasks: list each task with its name, kind and target column")
        return self


    def _check_auxiliaries(self) -> None:
        """Built-in auxiliaries: one data set, unique task names, a feature column only of a table."""
        taken = {t.name for t in self.tasks or []}
        for i, auxiliary in enumerate(self.auxiliaries):
            if self.data.sources is not None or self.data.streaming:
                raise FieldError(f"auxiliaries[{i}]", "built-in auxiliaries need one in-memory data set (no "
                                                      "data.sources, no data.streaming)")
            if auxiliary.kind == "feature" and self.data.dataset != "table":
                raise FieldError(f"auxiliaries[{i}].kind", f"a feature auxiliary withholds a table column; data set "
                                                           f"{self.data.dataset!r} has none: use kind: reconstruct")
            if auxiliary.task_name in taken:
                raise FieldError(f"auxiliaries[{i}]", f"its task {auxiliary.task_name!r} is already a task; "
                                                      "list each auxiliary once and rename clashing tasks")
            taken.add(auxiliary.task_name)
            used = {t.target: t.name for t in self.tasks or []}
            if auxiliary.kind == "feature" and auxiliary.column in used:
                raise FieldError(f"auxiliaries[{i}].column", f"{auxiliary.column!r} is already the target of task "
                                                             f"{used[auxiliary.column]!r}")


def _path(location: tuple[Any, ...], tail: str = "") -> str:
    """A field's dotted path, such as ``tasks[0].target``; ``tail`` continues it (a FieldError's own path)."""
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    if tail:
        out += tail if not out or tail.startswith("[") else f".{tail}"
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
            cause = (item.get("ctx") or {}).get("error")
            tail = cause.path if isinstance(cause, FieldError) else ""
            if isinstance(cause, FieldError):
                message = str(cause)
            if item["type"] == "extra_forbidden":
                message = "unknown key; check its spelling against the documented fields"
            elif item["type"].endswith("_type"):  # a wrong type: show what was given (true, "3", ...)
                message = f"{message}, got {item['input']!r} ({type(item['input']).__name__})"
            lines.append(f"  {_path(item['loc'], tail)}: {message}")
        raise ConfigError(f"{source} is not a valid taskloom config:\n" + "\n".join(lines)) from None


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads ``1e-3`` (no dot) as a float, as YAML 1.2 does."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.load(path.read_text(), Loader=YamlLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    return parse_config(raw, str(path))


def dump_config(config: Config) -> str:
    """The config as YAML text (what a run directory keeps as config.yaml)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
