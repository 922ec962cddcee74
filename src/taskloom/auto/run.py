"""``taskloom auto``: search on validation, then train the winner and the baselines over seeds and judge on test.

A run directory holds ``auto_config.yaml`` (the config searched), the study (``study.db``,
SQLite, unless ``storage`` names another database), ``auto_baselines.json`` (the single-task
validation scores trials are measured against), ``auto.json`` and, after the final stage, the
compare grid's files (compare.json, the models, report.html with a "Search" section).
"""
from __future__ import annotations

import logging
import re
import shutil
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

from taskloom.auto.final import final_config, final_spec, recommend, winner_variant
from taskloom.auto.search import (
    STUDY_NAME, Objective, build_pruner, check_architectures, open_study, require_optuna, run_study, search_baselines,
    startup_trials,
)
from taskloom.auto.space import SearchSpace, default_space
from taskloom.config import Config, ConfigError, dump_config, load_config
from taskloom.train.json_files import write_json_atomically
from taskloom.train.runner import load_data, new_run_dir, write_report_safely

log = logging.getLogger(__name__)

AUTO_FILE = "auto.json"
CONFIG_FILE = "auto_config.yaml"
BASELINES_FILE = "auto_baselines.json"
KEPT = {AUTO_FILE, CONFIG_FILE, BASELINES_FILE, "study.db"}
UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_budget(text: str) -> float:
    """Seconds of a budget such as ``90s``, ``30m``, ``1.5h``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh])\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"--budget: expected a positive time with a unit s, m or h (e.g. 30m), got {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text())


def _trials(study: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every trial (params, value, state, seconds, per-epoch scores) and the best value so far over time."""
    trials, curve = [], []
    started = min((t.datetime_start for t in study.trials if t.datetime_start), default=None)
    best = None
    for t in sorted(study.trials, key=lambda t: t.number):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        trials.append({"number": t.number, "state": t.state.name.lower(), "params": dict(t.params),
                       "value": t.value, "seconds": seconds, "groups": t.user_attrs.get("groups"),
                       "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())}})
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and t.datetime_complete]
    for t in sorted(complete, key=lambda t: t.datetime_complete):
        best = t.value if best is None else max(best, t.value)
        curve.append({"trial": t.number, "seconds": (t.datetime_complete - started).total_seconds(),
                      "value": t.value, "best": best})
    return trials, curve


def _importances(study: Any) -> dict[str, Any]:
    """Parameter importances with 2+ complete trials, else the reason they are omitted.

    PED-ANOVA (Watanabe et al. 2023, Optuna's default evaluator; it needs no scikit-learn):
    how much each parameter explains which trials reach the top quantile of values.
    """
    optuna = require_optuna()
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return {"omitted": f"needs at least 2 complete trials, the study has {len(complete)}"}
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings(record=True) as caught:  # e.g. too few trials per value: kept as notes
        warnings.simplefilter("always")
        try:
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (RuntimeError, ValueError) as error:
            return {"omitted": f"Optuna could not compute them: {error}"}
    out: dict[str, Any] = {"values": {k: float(v) for k, v in values.items()}, "evaluator": "PED-ANOVA (Optuna)"}
    notes = sorted({str(w.message) for w in caught})
    if notes:
        out["notes"] = notes
    return out


def summarize(study: Any) -> dict[str, Any]:
    """The search part of auto.json."""
    trials, curve = _trials(study)
    states = [t["state"] for t in trials]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    winner = None
    if complete:
        best = study.best_trial
        winner = {"trial": best.number, "params": dict(best.params), "value": best.value,
                  "groups": best.user_attrs.get("groups")}
    return {"trials": trials, "counts": {s: states.count(s) for s in sorted(set(states))},
            "best_so_far": curve, "importances": _importances(study), "winner": winner}


def _with_options(base: SearchSpace, given: SearchSpace | Mapping[str, Any] | None) -> SearchSpace:
    """``given`` itself, or ``base`` with the options a mapping names (e.g. only those given on the command line)."""
    if given is None:
        return base
    if isinstance(given, SearchSpace):
        return given
    unknown = sorted(set(given) - set(SearchSpace.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"search space: unknown options {unknown}; known: {sorted(SearchSpace.__dataclass_fields__)}")
    return replace(base, **given)


def _prepare(config: Config | None, run_dir: Path | None, resume: bool,
             space: SearchSpace | Mapping[str, Any] | None,
             storage: str | None) -> tuple[Config, Path, SearchSpace, str, dict[str, Any]]:
    if resume:
        if run_dir is None or not (run_dir / CONFIG_FILE).is_file() or not (run_dir / AUTO_FILE).is_file():
            raise ConfigError(f"--resume needs a taskloom auto run directory (with {CONFIG_FILE} and {AUTO_FILE}); "
                              f"{run_dir} is not one")
        stored = _read_json(run_dir / AUTO_FILE)
        saved = SearchSpace(**{k: tuple(v) if k in ("lr", "auxiliary_weight") else v
                               for k, v in stored["space"].items()})
        space = _with_options(saved, space)
        own = stored.get("own_storage", False)
        default = f"sqlite:///{(run_dir / 'study.db').resolve()}"  # the run directory may have moved
        storage = storage or (default if own else stored["storage"])
        return load_config(run_dir / CONFIG_FILE), run_dir, space, storage, stored
    if config is None:
        raise ConfigError("taskloom auto needs a CONFIG.yaml (or --resume RUN_DIR)")
    run_dir = run_dir or new_run_dir(config)
    if (run_dir / AUTO_FILE).is_file():
        raise ConfigError(f"{run_dir} already holds a search; continue it with --resume {run_dir}")
    space = _with_options(default_space(config), space)
    return config, run_dir, space, storage or f"sqlite:///{(run_dir / 'study.db').resolve()}", {}


def run_auto(config: Config | None, space: SearchSpace | Mapping[str, Any] | None = None, run_dir: Path | None = None,
             trials: int | None = None, budget: float | None = None, seeds: int | None = None,
             storage: str | None = None,
             resume: bool = False, pruner: str | Any = "halving", final: bool = True,
             on_trial: Callable[[int, dict[str, Any]], None] | None = None,
             on_trial_end: Callable[[int, str, float | None, int | None], None] | None = None,
             callbacks: Mapping[str, Callable[..., None]] | None = None) -> dict[str, Any]:
    """Search (``trials`` and/or ``budget`` seconds, whichever ends first), then the final stage; returns auto.json.

    ``space``: the candidates, or a mapping of the options that differ from the default :class:`SearchSpace`
    (on resume: from the stored one); ``seeds``: of the final
    stage (default 3; on resume the stored number);
    ``storage``: an Optuna storage URL (default SQLite in the run directory); ``final``: False stops
    after the search (a worker of a shared study).
    """
    require_optuna()
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds: need at least 1 seed, got {seeds}")
    if trials is None and budget is None:
        raise ConfigError("taskloom auto needs --trials N or --budget TIME (or both)")
    if trials is not None and trials < 0:
        raise ConfigError(f"--trials: need 0 or more trials (0: only the final stage), got {trials}")
    started = time.monotonic()
    config, run_dir, space, storage, stored = _prepare(config, run_dir, resume, space, storage)
    seeds = seeds or int(stored.get("seeds") or 3)
    pruner = build_pruner(pruner, config.train.epochs)
    splits = load_data(config)
    names = [t.name for t in splits.tasks]
    space.auxiliary = [t.name for t in splits.tasks if t.role == "auxiliary"]
    space.check(sum(t.role != "auxiliary" for t in splits.tasks))
    check_architectures(config, splits, space)
    if "static" in space.methods and not space.auxiliary and config.balancing.method != "static":
        raise ConfigError("--methods: static needs per-task weights; set them in the config (balancing: {method: "
                          "static, options: {weights: ...}}) or search equal, whose auxiliary weights are searched")
    for option in ("architectures", "methods", "groups"):
        before = stored.get("space", {}).get(option)
        if before is not None and before != getattr(space, option):
            raise ConfigError(f"--{option}: a resumed study keeps its candidates {before} (Optuna cannot change "
                              f"a categorical choice's values); start a new run directory to search others")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / CONFIG_FILE).write_text(dump_config(config))
    own = storage == f"sqlite:///{(run_dir / 'study.db').resolve()}"
    auto: dict[str, Any] = {"run_dir": str(run_dir), "storage": storage, "own_storage": own, "study": STUDY_NAME,
                            "space": space.to_json(), "seeds": seeds, "final": stored.get("final")}
    if stored.get("recommendation"):  # the last final stage's, until a new one replaces it (it names its params)
        auto["recommendation"] = stored["recommendation"]
    write_json_atomically(run_dir / AUTO_FILE, {**stored, **auto})
    baselines_file = run_dir / BASELINES_FILE
    if baselines_file.is_file():
        baselines = _read_json(baselines_file)
    else:
        baselines = search_baselines(config, splits, callbacks)
        write_json_atomically(baselines_file, baselines)
    auto["search_baselines"] = baselines
    study = open_study(storage, config.train.seed, pruner, startup=startup_trials(trials))
    left = None if budget is None else budget - (time.monotonic() - started)
    if left is not None and left <= 0:
        log.warning("the budget of %gs was spent before the first trial (data and single-task validation models); "
                    "no trial ran", budget)
    else:
        run_study(study, Objective(config, splits, space, baselines, on_trial, callbacks), trials, left,
                  on_trial_end)
    auto.update(summarize(study))
    write_json_atomically(run_dir / AUTO_FILE, auto)
    if not final or auto["winner"] is None:
        if auto["winner"] is None:
            log.warning("no trial completed: there is no winner to train; run more trials (--resume %s)", run_dir)
        return auto
    auto["final"] = _final_stage(config, auto, run_dir, seeds, names, callbacks)
    auto["recommendation"] = auto["final"]["recommendation"]
    write_json_atomically(run_dir / AUTO_FILE, auto)
    write_report_safely(run_dir)
    return auto


def _final_stage(config: Config, auto: Mapping[str, Any], run_dir: Path, seeds: int, names: list[str],
                 callbacks: Mapping[str, Callable[..., None]] | None) -> dict[str, Any]:
    """The winner, hard+equal and single-task models over seeds in one compare grid; a changed winner starts afresh."""
    from taskloom.train.grid import run_grid

    params = auto["winner"]["params"]
    previous = auto.get("final")
    if previous and (previous.get("params") != params or previous.get("seeds") != seeds):
        for path in run_dir.iterdir():
            if path.name not in KEPT:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    settings = final_config(config, params, names)
    spec = final_spec(settings, params, seeds)
    try:
        compare = run_grid(settings, spec, run_dir, callbacks=dict(callbacks or {}))
    except Exception:
        log.warning("the final stage stopped; once the error below is fixed, finish it with "
                    "taskloom auto --resume %s --trials 0", run_dir)
        raise
    winner = winner_variant(spec)
    analysis = compare["analysis"]
    verdicts = {name: {"delta_m": entry.get("delta_m"),
                       "tasks": {t: {k: row.get(k) for k in ("relative_change", "low", "high", "verdict") if k in row}
                                 for t, row in entry.get("tasks", {}).items()}}
                for name, entry in analysis.get("variants", {}).items()}
    return {"params": params, "seeds": seeds, "variant": winner, "variants": list(verdicts), "verdicts": verdicts,
            "recommendation": recommend(analysis, winner)}
