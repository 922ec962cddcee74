"""The report's figures, drawn with matplotlib's Agg backend and returned as PNG data URIs.

Pareto plot: for 2 tasks a 2-D scatter; for more, one panel per task pair (up to
``MAX_PAIR_TASKS`` tasks). Filled markers are variants on the Pareto front over all tasks.
With any number of tasks, :func:`relative_change_strip` shows every variant on every task.
"""
from __future__ import annotations

import base64
import io
import itertools
import math
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MAX_PAIR_TASKS = 5


def to_data_uri(figure: plt.Figure) -> str:
    """The figure as a base64 PNG data URI; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def learning_curves(
    task: str,
    train: Mapping[str, Sequence[tuple[int, float]]],
    val: Mapping[str, Sequence[tuple[int, float]]],
    metric: str | None,
    val_loss: Mapping[str, Sequence[tuple[int, float]]] | None = None,
) -> str:
    """One task per epoch: training (solid) and validation (dashed) loss on one axis, validation metric beside.

    One colour per model, the same in both panels.
    """
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = list(dict.fromkeys([*train, *(val_loss or {}), *val]))
    for k, model in enumerate(models):
        color = colors[k % len(colors)]
        if train.get(model):
            left.plot(*zip(*train[model]), marker="o", markersize=3, color=color, label=f"{model} train")
        if (val_loss or {}).get(model):
            left.plot(*zip(*val_loss[model]), marker="s", markersize=3, linestyle="--", color=color,
                      label=f"{model} validation")
        if val.get(model):
            right.plot(*zip(*val[model]), marker="o", markersize=3, color=color, label=model)
    left.set(title=f"{task}: loss (solid: training, dashed: validation)", xlabel="epoch", ylabel="loss")
    right.set(title=f"{task}: validation {metric or 'metric'}", xlabel="epoch", ylabel=metric or "")
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.title.set_fontsize(10)
    handles = [plt.Line2D([], [], color=colors[k % len(colors)], marker="o", markersize=3, label=model)
               for k, model in enumerate(models)]
    if handles:
        right.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return to_data_uri(figure)


def weights_over_time(model: str, weights: Mapping[str, Sequence[tuple[int, float]]]) -> str:
    """Each task's loss weight per epoch for one model."""
    figure, axis = plt.subplots(figsize=(7, 3.2))
    for task, points in weights.items():
        axis.plot(*zip(*points), marker="o", markersize=3, label=task)
    axis.set(title=f"{model}: task weights", xlabel="epoch", ylabel="weight")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    return to_data_uri(figure)


def heatmap(matrix: Sequence[Sequence[float | None]], names: Sequence[str], title: str, label: str) -> str:
    """A K x K matrix (rows: from task, columns: onto task) with its values written in the cells.

    The colour scale is set by the off-diagonal cells (the diagonal, a task onto itself, would swamp it).
    """
    values = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    off = values[~np.eye(len(values), dtype=bool)]
    scale = off if np.isfinite(off).any() else values
    limit = float(np.nanmax(np.abs(scale))) if np.isfinite(scale).any() else 1.0
    limit = limit if limit > 0 else 1.0
    size = max(3.5, 0.45 * len(names) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit)
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set(title=title, xlabel="onto task", ylabel="from task")
    if len(names) <= 10:
        for i, j in itertools.product(range(len(names)), repeat=2):
            if np.isfinite(values[i, j]):
                strong = abs(values[i, j]) > 0.6 * limit
                axis.text(j, i, f"{values[i, j]:.2g}", ha="center", va="center", fontsize=7,
                          color="white" if strong else "black")
    figure.colorbar(image, ax=axis, label=label, shrink=0.8)
    return to_data_uri(figure)


def pareto_front(points: np.ndarray, higher_is_better: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the points no other point dominates (at least as good everywhere, better somewhere)."""
    signed = points * np.where(np.asarray(higher_is_better), 1.0, -1.0)
    keep = np.ones(len(points), dtype=bool)
    for i in range(len(points)):
        others = np.delete(signed, i, axis=0)
        dominated = np.all(others >= signed[i], axis=1) & np.any(others > signed[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def pareto_scatter(
    variants: Mapping[str, Mapping[str, float]],
    tasks: Sequence[str],
    higher_is_better: Sequence[bool],
    metrics: Sequence[str | None],
) -> str:
    """Every variant's per-task metrics, with the variants on the Pareto front filled and joined."""
    names = list(variants)
    shown = list(tasks)[:MAX_PAIR_TASKS]
    points = np.array([[variants[v][t] for t in tasks] for v in names], dtype=float)
    front = pareto_front(points, higher_is_better)
    pairs = list(itertools.combinations(range(len(shown)), 2))
    columns = min(3, len(pairs))
    rows = math.ceil(len(pairs) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.3 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (a, b) in zip(axes.flat, pairs):
        for k, name in enumerate(names):
            color = colors[k % len(colors)]
            axis.scatter(points[k, a], points[k, b], s=60, color=color, label=name,
                         facecolors=color if front[k] else "none", edgecolors=color, linewidths=1.5)
        pair_front = pareto_front(points[:, [a, b]], [higher_is_better[a], higher_is_better[b]])
        order = np.argsort(points[pair_front, a])
        axis.plot(points[pair_front, a][order], points[pair_front, b][order], "k--", lw=0.8, alpha=0.6)
        axis.set_xlabel(f"{tasks[a]} {metrics[a] or ''} ({'higher' if higher_is_better[a] else 'lower'} is better)",
                        fontsize=8)
        axis.set_ylabel(f"{tasks[b]} {metrics[b] or ''} ({'higher' if higher_is_better[b] else 'lower'} is better)",
                        fontsize=8)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(pairs):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    figure.suptitle("per-task metrics of every variant "
                    "(filled: Pareto front over all tasks; dashed: front of the pair)",
                    fontsize=9)
    return to_data_uri(figure)


def relative_change_strip(
    changes: Mapping[str, Mapping[str, float | None]],
    tasks: Sequence[str],
    pareto: Mapping[str, bool],
    baseline: str,
) -> str:
    """Variants (rows) x tasks (columns): relative change against ``baseline`` in %, blue better, red worse.

    Rows of Pareto-optimal variants (no variant at least as good on every task and better on
    one) are marked with a star and a black frame; an undefined change is a grey cell.
    """
    names = list(changes)
    values = np.array([[np.nan if changes[v].get(t) is None else float(changes[v][t]) for t in tasks]
                       for v in names], dtype=float)
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    limit = limit if limit > 0 else 1.0
    width = min(18.0, max(5.0, 0.62 * len(tasks) + 3.2))
    figure, axis = plt.subplots(figsize=(width, 0.42 * len(names) + 1.8))
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#d9d9d9")
    image = axis.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
    labels = [("\u2605 " if pareto.get(v) else "") + v for v in names]
    axis.set_xticks(range(len(tasks)), tasks, rotation=45 if len(tasks) > 4 else 0,
                    ha="right" if len(tasks) > 4 else "center", fontsize=8)
    axis.set_yticks(range(len(names)), labels, fontsize=8)
    for i, name in enumerate(names):
        if pareto.get(name):
            axis.add_patch(plt.Rectangle((-0.5, i - 0.5), len(tasks), 1, fill=False, edgecolor="black", lw=1.6))
        for j in range(len(tasks)):
            if np.isfinite(values[i, j]):
                strong = abs(values[i, j]) > 0.6 * limit
                axis.text(j, i, f"{round(values[i, j], 1) + 0.0:+.1f}", ha="center", va="center", fontsize=7,
                          color="white" if strong else "black")
    axis.set_title(f"relative change vs {baseline} per task, % (\u2605 and frame: Pareto-optimal over all tasks)",
                   fontsize=9)
    figure.colorbar(image, ax=axis, label="% (positive: better)", shrink=0.9, pad=0.02)
    return to_data_uri(figure)
