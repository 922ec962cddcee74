"""The final stage of ``taskloom auto``: the winner against single-task models and hard+equal, over seeds, on test.

The winner becomes a variant of one compare grid (:func:`taskloom.train.grid.run_grid`), so
its verdicts, intervals over seeds and test rows and delta-m over main tasks (Maninis et al.
2019) come from the same machinery as ``taskloom compare``. Multi-task learning is recommended
only when the winner's delta-m interval lies above zero.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from taskloom.auto.space import auxiliary_weights, trial_config
from taskloom.config import Config, parse_config
from taskloom.train.grid import GridSpec

REFERENCE = "hard+equal"


def final_config(config: Config, params: Mapping[str, Any], task_names: Sequence[str]) -> Config:
    """The base config with the winner's architecture, balancing (auxiliary weights included) and learning rate."""
    chosen = trial_config(config, {k: v for k, v in params.items() if k != "groups"}, task_names)
    data = chosen.model_dump()
    data["tracking"] = config.model_dump()["tracking"]
    return parse_config(data, "the config of the final stage")


def final_spec(config: Config, params: Mapping[str, Any], seeds: int) -> GridSpec:
    """Winner and hard+equal (their architectures x methods) with single-task baselines; TAG groups if chosen."""
    method = "static" if auxiliary_weights(params) else params["balancing"]
    first = config.train.seed
    return GridSpec(methods=list(dict.fromkeys([method, "equal"])),
                    architectures=list(dict.fromkeys([params["architecture"], "hard"])),
                    seeds=list(range(first, first + seeds)),
                    groups=[int(params["groups"])] if int(params.get("groups", 1)) > 1 else [], baselines=True)


def winner_variant(spec: GridSpec) -> str:
    """The compare variant that is the search's winner."""
    return f"groups-{spec.groups[0]}" if spec.groups else spec.grouping_variant


def recommend(analysis: Mapping[str, Any], winner: str) -> dict[str, Any]:
    """Multi-task (the winner) only when its delta-m interval over main tasks lies above zero, else single-task.

    ``analysis`` is compare.json's ``analysis`` (``variants -> name -> delta_m`` with mean, low, high).
    """
    variants = analysis.get("variants", {})
    delta = (variants.get(winner) or {}).get("delta_m") or {}
    mean, low, high = delta.get("mean"), delta.get("low"), delta.get("high")
    out: dict[str, Any] = {"winner": winner, "delta_m": {"mean": mean, "low": low, "high": high}}
    reference = (variants.get(REFERENCE) or {}).get("delta_m") if winner != REFERENCE else None
    if reference:
        out["reference"] = {"variant": REFERENCE, "mean": reference.get("mean"), "low": reference.get("low"),
                            "high": reference.get("high")}
    if mean is None:
        out.update(choice="single-task", text="Single-task models are recommended: the winner's delta-m over the "
                                              "main tasks could not be measured on the test split.")
    elif low is None or str(delta.get("covers", "")).startswith("test rows only"):
        out.update(choice="single-task", text=f"Single-task models are recommended: the winner {winner} has "
                                              f"delta-m {mean:+.2f} % but one seed gives no interval over seeds; "
                                              "it is not shown to be above 0. Run more seeds (--seeds) to decide.")
    elif low > 0:
        out.update(choice="multi-task", text=f"The multi-task set-up {winner} is recommended: delta-m over the main "
                                             f"tasks {mean:+.2f} % (95% interval {low:+.2f} to {high:+.2f}), "
                                             "significantly above 0.")
    else:
        out.update(choice="single-task", text=f"Single-task models are recommended: the winner {winner} has delta-m "
                                              f"{mean:+.2f} % (95% interval {low:+.2f} to {high:+.2f}), "
                                              "not significantly above 0.")
    return out
