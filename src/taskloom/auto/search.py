"""The Optuna study of ``taskloom auto``: trials trained on the training split, scored on validation only.

A trial trains one model with its choices and reports the selection score
(:mod:`taskloom.train.score`, main tasks, against single-task validation scores) after every
epoch, so a pruner (successive halving, Jamieson & Talwalkar 2016; Hyperband, Li et al. 2018)
can stop it early; its value is the best epoch's score. The sampler is TPE (Bergstra et al. 2011),
seeded. The test split is never read here.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Mapping, Sequence

from taskloom.auto.space import SearchSpace, suggest, trial_config
from taskloom.config import Config, ConfigError, parse_config
from taskloom.data.dataset import DataSplits
from taskloom.evaluate.grouping import select_groups
from taskloom.evaluate.logged import mean_logged_matrix
from taskloom.task import Task
from taskloom.train.runner import build_model, build_trainer, training_data
from taskloom.train.score import SelectionScore
from taskloom.train.trainer import Trainer, TrainingDiverged

log = logging.getLogger(__name__)

PRUNERS = ("halving", "hyperband", "none")
STUDY_NAME = "taskloom-auto"


def require_optuna() -> Any:
    """The optuna module; a clear error naming the extra to install when it is missing."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("taskloom auto needs Optuna: pip install taskloom[auto]") from None
    return optuna


STARTUP_TRIALS = 4


def build_pruner(name: str | Any, epochs: int, startup: int = STARTUP_TRIALS) -> Any:
    """A pruner by name (halving, hyperband, none) over epochs as the resource; an Optuna pruner passes through.

    Successive halving (asynchronous, Li et al. 2020) keeps about the best third at epochs r, 3r, 9r, ...
    (r = epochs // 9, at least 1). A named pruner never prunes before ``startup`` trials have completed:
    with fewer finished rivals, asynchronous halving would stop every trial that is not the best so far.
    """
    optuna = require_optuna()
    if not isinstance(name, str):
        return name
    if name == "halving":
        inner = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, epochs // 9), reduction_factor=3)
    elif name == "hyperband":
        inner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    elif name == "none":
        return optuna.pruners.NopPruner()
    else:
        raise ConfigError(f"--pruner: unknown pruner {name!r}; choose from {', '.join(PRUNERS)}")
    return _after_startup(optuna, inner, startup)


def _after_startup(optuna: Any, inner: Any, startup: int) -> Any:
    """``inner`` consulted at every report (so it records each rung), obeyed once ``startup`` trials completed."""

    class AfterStartup(optuna.pruners.BasePruner):
        def prune(self, study: Any, trial: Any) -> bool:
            pruned = inner.prune(study, trial)
            if not pruned:
                return False
            states = [t.state for t in study.get_trials(deepcopy=False)]
            return states.count(optuna.trial.TrialState.COMPLETE) >= startup

    return AfterStartup()


#: TPE's random start-up trials (Optuna's default) when no trial count bounds the search
STARTUP_TRIALS = 10


def startup_trials(trials: int | None) -> int:
    """Random trials before TPE models the results: a third of ``trials`` (2 to 10), 10 under a budget alone.

    With Optuna's fixed 10, a search of 10 or fewer trials would be random search throughout.
    """
    if trials is None:
        return STARTUP_TRIALS
    return max(2, min(STARTUP_TRIALS, trials // 3))


def open_study(storage: str, seed: int, pruner: Any, study_name: str = STUDY_NAME,
               startup: int = STARTUP_TRIALS) -> Any:
    """Create or join the study in ``storage`` (any URL Optuna supports); TPE seeded per start so a resume differs."""
    optuna = require_optuna()
    probe = optuna.load_study(study_name=study_name, storage=storage) if _exists(optuna, storage, study_name) else None
    done = len(probe.trials) if probe is not None else 0
    sampler = optuna.samplers.TPESampler(seed=seed + done, n_startup_trials=startup)
    return optuna.create_study(study_name=study_name, storage=storage, direction="maximize", sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def _exists(optuna: Any, storage: str, name: str) -> bool:
    try:
        return any(s.study_name == name for s in optuna.get_all_study_summaries(storage=storage))
    except Exception as error:
        raise ConfigError(f"--storage: cannot open {storage!r}: {type(error).__name__}: {error}") from None


def check_architectures(config: Config, splits: DataSplits, space: SearchSpace) -> None:
    """Build each candidate architecture once, before any training, so one that cannot fit this trunk is refused.

    E.g. MMoE and PLE gates read a flattened input, which a sentence of tokens (a BiLSTM tagger) is not;
    found here, the search does not fail at the first trial that picks it, after the single-task models.
    """
    names = [t.name for t in splits.tasks]
    for architecture in space.architectures:
        params = {"architecture": architecture, "balancing": config.balancing.method, "lr": config.optimizer.lr}
        try:
            build_model(trial_config(config, params, names), list(splits.tasks), splits)
        except (ValueError, TypeError, ConfigError) as error:
            others = [a for a in space.architectures if a != architecture]
            hint = f"; drop it, e.g. --architectures {','.join(others)}" if others else ""
            raise ConfigError(f"--architectures: {architecture} cannot be built for this config "
                              f"({type(error).__name__}: {error}){hint}") from None


def best_validation(trainer: Trainer, tasks: Sequence[Task]) -> dict[str, float]:
    """Each task's main validation metric at the trainer's best epoch."""
    for record in trainer.history.records:
        if record["epoch"] == trainer.history.best_epoch:
            values = {t.name: (record.get("val") or {}).get(t.name, {}).get(t.main_metric) for t in tasks}
            return {name: value for name, value in values.items() if value is not None}
    return {}


def with_epoch(callbacks: Mapping[str, Callable[..., None]] | None,
               epoch_end: Callable[[dict[str, Any]], None] | None) -> dict[str, Callable[..., None]]:
    """Trainer callbacks (e.g. progress bars) with ``epoch_end`` called after their own epoch callback."""
    out = dict(callbacks or {})
    first = out.get("epoch")
    if epoch_end is not None:
        out["epoch"] = lambda record: (first(record) if first is not None else None, epoch_end(record))
    return out


def search_baselines(config: Config, splits: DataSplits,
                     callbacks: Mapping[str, Callable[..., None]] | None = None) -> dict[str, float]:
    """Single-task validation scores every trial's selection score is measured against (one seed, training on train).

    Tasks with a ``selection.baselines`` entry reuse it instead of training.
    """
    given = dict(config.selection.baselines or {})
    out = {}
    callbacks = dict(callbacks or {})
    for task in splits.tasks:
        if task.name in given:
            out[task.name] = float(given[task.name])
            continue
        name = f"single/{task.name}"
        trainer = build_trainer(config, [task], splits, None, name, balancing=False, callbacks=callbacks)
        if "start" in callbacks:
            callbacks["start"](name, trainer.epochs, trainer.start_epoch)
        trainer.fit(training_data(config, splits, [task.name]), splits.val)
        out.update(best_validation(trainer, [task]))
    return out


def group_config(settings: Config, group: Sequence[str]) -> Config:
    """A trial's config for one group of tasks: per-task weights kept for its tasks, selection on its tasks only."""
    data = settings.model_dump()
    data["tracking"]["measure"] = []
    weights = data["balancing"]["options"].get("weights")
    if weights is not None:
        data["balancing"]["options"]["weights"] = {t: w for t, w in weights.items() if t in group}
    selection = data["selection"]
    named = set(selection.get("weights") or {}) | ({selection["task"]} if selection.get("task") else set())
    if not named <= set(group):
        selection.update(score="mean_relative", weights=None, task=None)
    if selection.get("baselines"):
        selection["baselines"] = {t: v for t, v in selection["baselines"].items() if t in group}
    return parse_config(data, f"the config of the search group {'+'.join(group)}")


class Objective:
    """One trial: train the trial's model on train, score on validation after each epoch, prune or go on."""

    def __init__(self, config: Config, splits: DataSplits, space: SearchSpace, baselines: Mapping[str, float],
                 on_trial: Callable[[int, dict[str, Any]], None] | None = None,
                 callbacks: Mapping[str, Callable[..., None]] | None = None) -> None:
        self.config, self.splits, self.space, self.baselines = config, splits, space, dict(baselines)
        self.on_trial, self.callbacks = on_trial, dict(callbacks or {})

    def _train(self, settings: Config, tasks: list[Task], name: str,
               epoch_end: Callable[[dict[str, Any]], None] | None = None) -> Trainer:
        callbacks = with_epoch(self.callbacks, epoch_end)
        trainer = build_trainer(settings, tasks, self.splits, None, name, callbacks=callbacks,
                                baselines={t.name: self.baselines[t.name] for t in tasks if t.name in self.baselines})
        if "start" in callbacks:
            callbacks["start"](name, trainer.epochs, trainer.start_epoch)
        trainer.fit(training_data(settings, self.splits, [t.name for t in tasks]), self.splits.val)
        return trainer

    def __call__(self, trial: Any) -> float:
        optuna = require_optuna()
        params = suggest(trial, self.space)
        if self.on_trial is not None:
            self.on_trial(trial.number, params)
        tasks = list(self.splits.tasks)
        settings = trial_config(self.config, params, [t.name for t in tasks])

        def report(record: dict[str, Any]) -> None:
            score = record.get("score")
            if score is None or not math.isfinite(score):
                return
            trial.report(float(score), int(record["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {record['epoch']} (validation score {score:.4g})")

        trainer = self._train(settings, tasks, f"trial{trial.number}", report)
        if params.get("groups", 1) == 1:
            value = float(trainer.history.best_score)
        else:
            value = self._grouped(trial, settings, trainer, tasks, params["groups"])
        return value if math.isfinite(value) else float("nan")  # no finite score: Optuna records the trial as failed

    def _grouped(self, trial: Any, settings: Config, trainer: Trainer, tasks: list[Task], networks: int) -> float:
        """TAG groups from the all-task model's affinity; each group trained; the grouping scored per task."""
        affinity, epochs = mean_logged_matrix(trainer.history.records, "affinity")
        if not epochs:
            raise ConfigError("--groups: the trial's model logged no task affinity; tracking could not measure it")
        names = [t.name for t in tasks]
        grouping = select_groups(affinity, networks, names, allow_missing=True)
        trial.set_user_attr("groups", grouping.groups)
        values: dict[str, float] = {}
        for index, group in enumerate(grouping.groups):
            served = [t for t, g in grouping.served_by.items() if g == index]
            if len(group) == 1:
                found = {group[0]: self.baselines[group[0]]} if group[0] in self.baselines else {}
            else:
                members = [t for t in tasks if t.name in group]
                found = best_validation(self._train(group_config(settings, group), members,
                                                    "group/" + "+".join(group)), members)
            values.update({t: found[t] for t in served if t in found})
        score = SelectionScore(tasks, self.config.selection.score, weights=self.config.selection.weights,
                               task=self.config.selection.task, baselines=self.baselines)
        by_task = {t.name: {t.main_metric: values.get(t.name)} for t in tasks}
        return float(score(by_task))


def run_study(study: Any, objective: Objective, trials: int | None, seconds: float | None,
              on_trial_end: Callable[[int, str, float | None, int | None], None] | None = None) -> None:
    """Run trials until ``trials`` have run in this call or ``seconds`` have passed (whichever comes first).

    ``on_trial_end(number, state, value, last_epoch)`` hears how each trial ended (complete, pruned, fail).
    """
    if trials is None and seconds is None:
        raise ConfigError("taskloom auto needs --trials N or --budget TIME (or both)")
    ended = [] if on_trial_end is None else [
        lambda _, trial: on_trial_end(trial.number, trial.state.name.lower(), trial.value, trial.last_step)]
    study.optimize(objective, n_trials=trials, timeout=seconds, catch=(TrainingDiverged,), callbacks=ended)
