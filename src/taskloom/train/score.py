"""Multi-task selection scores: one number per evaluation that decides the best checkpoint."""
from __future__ import annotations

import math
from typing import Mapping

from taskloom.evaluate.delta import relative_change
from taskloom.task import Task


def _change(value: float, baseline: float, higher_is_better: bool) -> float:
    if baseline == 0:
        return 100.0 * (value - baseline) * (1 if higher_is_better else -1)
    return relative_change(value, baseline, higher_is_better)


class SelectionScore:
    """Scores evaluation results: higher is better.

    ``mean_relative`` (default): mean over tasks of the signed relative change (%) of each
    task's main metric against its single-task baseline when given, else against the
    first evaluation (auxiliary tasks are left out); ``weighted``: the same with per-task weights; ``task``: one task's
    main metric (negated when lower is better). Tasks whose metric is undefined (None) in an
    evaluation are left out of that evaluation's score. A NaN or infinite metric means the
    model diverged: the score is then -inf, so that evaluation is never selected, and a
    non-finite value never becomes a baseline.
    """

    def __init__(
        self,
        tasks: list[Task],
        score: str = "mean_relative",
        weights: Mapping[str, float] | None = None,
        task: str | None = None,
        baselines: Mapping[str, float] | None = None,
    ) -> None:
        if score not in ("mean_relative", "weighted", "task"):
            raise ValueError(f"selection.score must be mean_relative, weighted or task, got {score!r}")
        main = {t.name: t for t in tasks if t.role != "auxiliary"}
        if main and task is not None and task not in main and any(t.name == task for t in tasks):
            raise ValueError(f"selection.task {task!r} is an auxiliary task; select on a main task")
        # a model of auxiliary tasks only (e.g. an auxiliary task's single-task baseline) selects on them
        self.tasks = main or {t.name: t for t in tasks}
        if task is not None and task not in self.tasks:
            raise ValueError(f"selection.task {task!r} is not a task; tasks are {list(self.tasks)}")
        self.score = score
        self.weights = dict(weights or {name: 1.0 for name in self.tasks})
        self.task = task
        self.baselines: dict[str, float] = dict(baselines or {})
        self.against = "single-task baselines" if self.baselines else "the first evaluation"

    def state_dict(self) -> dict[str, float]:
        return dict(self.baselines)

    def load_state_dict(self, baselines: Mapping[str, float]) -> None:
        self.baselines = dict(baselines)

    def describe(self) -> str:
        """What the score measures, for a progress line: "y1 mse (lower is better)", "mean % change of ..."."""
        if self.score == "task":
            task = self.tasks[self.task]
            return f"{self.task} {task.main_metric} ({'higher' if task.higher_is_better else 'lower'} is better)"
        kind = "mean" if self.score == "mean_relative" else "weighted mean"
        metrics = ", ".join(f"{name} {task.main_metric}" for name, task in self.tasks.items())
        return f"{kind} % change of {metrics} vs {self.against}"

    def __call__(self, results: Mapping[str, Mapping[str, float | None]]) -> float:
        mains = {
            name: results[name].get(task.main_metric)
            for name, task in self.tasks.items()
            if name in results and results[name].get(task.main_metric) is not None
        }
        if any(not math.isfinite(value) for value in mains.values()):
            return float("-inf")
        if self.score == "task":
            value = mains.get(self.task)
            if value is None:
                return float("-inf")
            return value if self.tasks[self.task].higher_is_better else -value
        for name, value in mains.items():
            if not math.isfinite(self.baselines.get(name, 0.0)):
                del self.baselines[name]
            self.baselines.setdefault(name, value)
        terms = [
            (self.weights.get(name, 0.0), _change(value, self.baselines[name], self.tasks[name].higher_is_better))
            for name, value in mains.items()
        ]
        total = sum(w for w, _ in terms)
        score = sum(w * c for w, c in terms) / total if total > 0 else float("-inf")
        return score if math.isfinite(score) else float("-inf")
