"""One self-contained HTML report per run directory: tables, embedded PNG plots, inline CSS, no scripts.

It answers "does multi-task learning help here, for which task" (comparison and verdicts),
and shows why (learning curves, task weights, gradient conflict, affinity, Pareto front).
Conflict and affinity are drawn per multi-task variant, averaged over its seeds; the
affinity that chose a compare run's task groups is the one marked as such.
"""
from __future__ import annotations

import html
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from taskloom.evaluate.curves import auxiliary_signals, curve_table
from taskloom.evaluate.logged import mean_logged_matrix
from taskloom.report.tree import splits_table, tree_svg
from taskloom.evaluate.verdict import analyze
from taskloom.report import plots
from taskloom.report.rundir import RunData, load_run
from taskloom.report.search import search_section

log = logging.getLogger(__name__)

SECTIONS = [
    ("comparison", "Single-task vs multi-task"),
    ("curves", "Learning curves"),
    ("signals", "Learning-curve signals"),
    ("weights", "Task weights over time"),
    ("conflict", "Gradient conflict and task affinity"),
    ("pareto", "Per-task metrics and Pareto front"),
    ("config", "Run configuration"),
]
OPTIONAL_SECTIONS = [("search", "Search")]  # drawn only for a run that has auto.json (taskloom auto)

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1.5rem;
color:#1d2330;background:#fff;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;border-bottom:2px solid #e3e7ee;padding-bottom:.2rem;
margin-top:2rem}h3{font-size:1rem;margin:1rem 0 .4rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}th,td{border:1px solid #d8dde6;padding:.3rem .6rem;
text-align:right;white-space:nowrap}th{background:#f3f5f9}td.name,th.name{text-align:left}
.helps{color:#116b2f;font-weight:600}.hurts{color:#a3141e;font-weight:600}.noise{color:#5b6372}
.absent{color:#5b6372;font-style:italic}.lead{color:#5b6372;margin-top:0}
img{max-width:100%;height:auto;display:block;margin:.5rem 0}pre{background:#f6f8fa;padding:1rem;overflow:auto;
font-size:.85rem;border-radius:4px}nav a{margin-right:1rem}.wide{overflow-x:auto}
.groups{white-space:normal;display:inline-block;max-width:26rem;font-size:.8rem}
.pair{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}.pair figure{margin:0;flex:1 1 45%;min-width:20rem}
table.signals{font-size:.82rem}table.signals th{white-space:normal;vertical-align:bottom}
table.signals th[colspan]{text-align:center}
table.signals td.aux{white-space:normal;min-width:6rem}
figcaption{font-size:.85rem;color:#5b6372;max-width:32rem}.note{color:#7a4b00;background:#fff7e6;
padding:.4rem .6rem;border-radius:4px}
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return html.escape(str(value))


def _pct(value: float | None) -> str:
    return "&ndash;" if value is None else f"{round(value, 2) + 0.0:+.2f}%"  # + 0.0: no "-0.00%"


def _verdict_cell(verdict: str | None, test: str | None = None) -> str:
    if not verdict:
        return "<td class='name'>&ndash;</td>"
    css = "helps" if verdict == "helps" else "hurts" if verdict == "hurts" else "noise"
    title = f" title='{html.escape(test)}'" if test else ""
    return f"<td class='name {css}'{title}>{html.escape(verdict)}</td>"


def _absent(text: str) -> str:
    return f"<p class='absent'>{html.escape(text)}</p>"


def _img(uri: str, alt: str) -> str:
    return f"<img src='{uri}' alt='{html.escape(alt)}'>"


def _comparison_section(run: RunData) -> str:
    if run.compare:
        return _grid_table(run.compare)
    return _absent("No comparison yet: train with baselines (train.baselines or taskloom compare).")


def analysis_of(compare: Mapping[str, Any]) -> dict[str, Any]:
    """The analysis a run stored in compare.json, or (older or hand-made files) one computed now."""
    return compare.get("analysis") or analyze(compare, compare.get("run_dir"))


def _groups_line(groups: Any) -> str:
    if not groups:
        return ""
    text = " | ".join("{" + ", ".join(map(str, g)) + "}" for g in groups)
    return f"<br><span class='noise groups'>{html.escape(text)}</span>"


def _groups_against_all_in_one(compare: Mapping[str, Any]) -> str:
    """Rows of delta-m of each TAG grouping against the all-in-one model trained the same way (Fifty et al. 2021)."""
    rows = []
    for name, variant in compare["variants"].items():
        reference = f"{variant.get('architecture')}+{variant.get('balancing')}"
        if variant.get("kind") != "groups" or reference not in compare["variants"]:
            continue
        dm = analyze({**compare, "baseline": reference, "analysis": None},
                     compare.get("run_dir"))["variants"][name]["delta_m"]
        interval = "" if dm.get("low") is None else f" [{dm['low']:+.2f}, {dm['high']:+.2f}]"
        rows.append(f"<tr><td class='name'>{html.escape(name)} vs {html.escape(reference)}</td>"
                    f"<td class='name'>groups</td><td>{_pct(dm.get('mean'))}{interval}</td>"
                    "<td colspan='4' class='noise'>against the all-in-one model</td></tr>")
    return "".join(rows)


def _seed_mean(value: Any) -> float | None:
    """A per-seed mapping's mean (a plain number is returned as it is)."""
    if isinstance(value, Mapping):
        return float(np.mean(list(value.values()))) if value else None
    return value


def _interval(low: Any, high: Any) -> str:
    return "" if low is None or high is None else f" [{low:+.2f}, {high:+.2f}]"


def _reference_rows(compare: Mapping[str, Any], task: str, label: str) -> str:
    reference = (compare.get("references") or {}).get(task) or {}
    metric = compare["tasks"][task].get("metric")
    rows = []
    for kind in ("trivial", "linear"):
        value = (reference.get(kind) or {}).get(metric)
        if value is not None:
            rows.append(f"<tr class='reference'><td class='name'>{label}</td><td class='name'>({kind})</td>"
                        f"<td>{_fmt(value)}</td><td>&ndash;</td><td colspan='3' class='noise'>reference</td></tr>")
    return "".join(rows)


def _grid_table(compare: Mapping[str, Any]) -> str:
    result = analysis_of(compare)
    baseline = result["baseline"]
    summary = []
    for name, variant in result["variants"].items():
        dm = variant.get("delta_m") or {}
        seconds, analysis = (_seed_mean(compare["variants"][name].get(key)) for key in ("train_seconds",
                                                                                       "analysis_seconds"))
        left_out = "; ".join(f"{t}: {why}" for t, why in (dm.get("left_out") or {}).items())
        note = f"<br><span class='noise'>left out: {html.escape(left_out)}</span>" if left_out else ""
        summary.append(
            f"<tr><td class='name'>{html.escape(name)}{_groups_line(variant.get('groups'))}</td>"
            f"<td class='name'>{_fmt(variant.get('kind'))}</td>"
            f"<td>{'baseline' if name == baseline else _pct(dm.get('mean')) + _interval(dm.get('low'), dm.get('high'))}"
            f"{note}</td><td>{_fmt(variant.get('parameters'))}</td><td>{_fmt(seconds, 3)}</td>"
            f"<td>{_fmt(analysis, 3)}</td><td>{_fmt(variant.get('inference_seconds'), 3)}</td></tr>")
    summary.append(_groups_against_all_in_one(compare))
    rows = []
    for task, spec in compare["tasks"].items():
        label = f"{html.escape(task)} <span class='noise'>{_fmt(spec.get('metric'))} " \
                f"{'&uarr;' if spec.get('higher_is_better') else '&darr;'}</span>"
        for name, variant in result["variants"].items():
            row = variant["tasks"][task]
            if task in (compare["variants"][name].get("without") or []):
                continue
            if row.get("mean") is None:
                rows.append(f"<tr><td class='name'>{label}</td><td class='name'>{html.escape(name)}</td>"
                            f"<td colspan='5' class='absent'>{html.escape(row.get('note') or 'no value')}</td></tr>")
                continue
            sd = "" if row["std"] is None else f" &plusmn; {_fmt(row['std'], 2)}"
            flag = (" <span class='hurts' title='worse than the trivial predictor'>(below trivial)</span>"
                    if row.get("worse_than_trivial") else "")
            if name == baseline or baseline is None:
                tail = "<td>baseline</td><td class='name'>&ndash;</td><td>&ndash;</td>" if baseline else \
                    "<td>&ndash;</td><td class='name'>&ndash;</td><td>&ndash;</td>"
            else:
                unstable = (f"<br><span class='noise'>{html.escape(row['unstable'])}</span>"
                            if row.get("unstable") else "")
                tail = (f"<td>{_pct(row.get('relative_change'))}{_interval(row.get('low'), row.get('high'))}"
                        f"{unstable}</td>" + _verdict_cell(row.get("verdict"), row.get("test"))
                        + f"<td>{_fmt(row.get('p_value'), 2)}</td>")
            rows.append(f"<tr><td class='name'>{label}</td><td class='name'>{html.escape(name)}</td>"
                        f"<td>{_fmt(row['mean'])}{sd}{flag}</td><td>{row['n']}</td>{tail}</tr>")
        rows.append(_reference_rows(compare, task, label))
    covers = next((r for v in result["variants"].values() for r in v["tasks"].values() if r.get("covers")), None)
    method = (f"Intervals cover {html.escape(covers['covers'])}: {html.escape(covers['test'])}. " if covers else "")
    replication = (f"{compare.get('splits')} splits &times; {len(compare.get('seeds') or [])} seeds"
                   if (compare.get("splits") or 1) > 1 else f"{len(compare.get('seeds') or [])} seed(s), one split")
    return (
        f"<h3>Comparison ({_fmt(compare.get('dataset'))}, baseline: {html.escape(str(baseline))}, "
        f"{replication})</h3>"
        "<table><tr><th class='name'>variant</th><th class='name'>kind</th><th>&Delta;<sub>m</sub> (95% CI)</th>"
        "<th>parameters</th><th>train seconds (mean)</th><th>analysis seconds (mean)</th>"
        "<th>inference seconds</th></tr>"
        + "".join(summary)
        + "</table><div class='wide'><table><tr><th class='name'>task</th><th class='name'>variant</th>"
        "<th>test mean &plusmn; sd</th><th>units</th><th>change vs baseline (95% CI)</th><th class='name'>verdict</th>"
        "<th>p</th></tr>" + "".join(rows) + "</table></div>"
        f"<p class='lead'>{method}Helps / hurts only when the 95% interval excludes 0; with one seed no verdict is "
        "claimed (the interval covers the test rows only). Undefined: the test split cannot measure the task "
        "(constant or too few labels); it is left out of &Delta;<sub>m</sub>. References: the trivial predictor "
        "(training mean, class prior or majority class) and a linear model on the same features and split. Train "
        "seconds: a unit's models' epochs (steps, validation, checkpoints), without the conflict / affinity "
        "analysis, which is the analysis column.</p>"
        + _auxiliary_section(result)
    )


def _auxiliary_section(result: Mapping[str, Any]) -> str:
    """"Auxiliary tasks": per (auxiliary, main task) the metric with and without it, change, interval, verdict."""
    effects = result.get("auxiliary") or []
    if not effects:
        return ""
    rows = []
    for effect in effects:
        label = html.escape(effect["auxiliary"])
        for task, row in effect["tasks"].items():
            rows.append(f"<tr><td class='name'>{label}</td><td class='name'>{html.escape(task)}</td>"
                        f"<td>{_fmt(row.get('with'))}</td><td>{_fmt(row.get('without'))}</td>"
                        f"<td>{_fmt(row.get('difference'))}</td>"
                        f"<td>{_pct(row.get('relative_change'))}{_interval(row.get('low'), row.get('high'))}</td>"
                        + _verdict_cell(row.get("verdict"), row.get("test") or row.get("note")) + "</tr>")
        dm = effect.get("delta_m") or {}
        rows.append(f"<tr><td class='name'>{label}</td><td class='name'>&Delta;<sub>m</sub> (main tasks)</td>"
                    "<td>&ndash;</td><td>&ndash;</td><td>&ndash;</td>"
                    f"<td>{_pct(dm.get('mean'))}{_interval(dm.get('low'), dm.get('high'))}</td>"
                    + _verdict_cell(dm.get("verdict"), dm.get("method")) + "</tr>")
    reference = html.escape(str(effects[0]["reference"]))
    return (f"<h3>Auxiliary tasks</h3><p class='lead'>Does each auxiliary task help the main tasks? {reference} "
            "with it against the same model trained without it (same seeds and splits; &ldquo;all "
            "auxiliaries&rdquo;: without every auxiliary task). Change and 95% interval as above, paired over seeds "
            "and test rows: helps / hurts only when the interval excludes 0, otherwise no evidence.</p>"
            "<div class='wide'><table><tr><th class='name'>auxiliary</th><th class='name'>main task</th>"
            "<th>with</th><th>without</th><th>difference</th><th>change (95% CI)</th>"
            "<th class='name'>verdict</th></tr>" + "".join(rows) + "</table></div>")


def _series(records: list[dict[str, Any]], get: Callable[[dict[str, Any]], Any]) -> list[tuple[int, float]]:
    out = []
    for record in records:
        value = get(record)
        if value is not None and isinstance(value, (int, float)) and math.isfinite(value):
            out.append((int(record["epoch"]), float(value)))
    return out


def _curves_section(run: RunData) -> str:
    if not run.records:
        return _absent("No per-epoch metrics (metrics.jsonl) in this run directory.")
    parts = []
    for task in run.tasks():
        metric = run.main_metric(task)
        train, val_loss, val = {}, {}, {}
        for model in run.models():
            if model.startswith("single/") and model != f"single/{task}":
                continue
            records = run.model_records(model)
            train[model] = _series(records, lambda r: (r.get("train_loss") or {}).get(task))
            val_loss[model] = _series(records, lambda r: (r.get("val_loss") or {}).get(task))
            val[model] = _series(records, lambda r: ((r.get("val") or {}).get(task) or {}).get(metric))
        if any(train.values()) or any(val.values()) or any(val_loss.values()):
            uri = plots.learning_curves(task, train, val, metric, val_loss)
            parts.append(f"<h3>{html.escape(task)}</h3>" + _img(uri, f"learning curves of {task}"))
    lead = ("<p class='lead'>Per task and model: training and validation loss on one axis (a widening gap is "
            "overfitting), the validation metric beside it." + (" First seed of a compare run." if run.seeds() else "")
            + "</p>")
    return lead + "".join(parts) if parts else _absent("The metrics hold no per-task losses to plot.")


def _variant_gains(run: RunData) -> dict[str, dict[str, float | None]]:
    """Per multi-task variant, each task's relative change against single-task (%)."""
    if not run.compare or not run.compare.get("baseline"):
        return {}
    result = analysis_of(run.compare)
    return {name: {t: row.get("relative_change") for t, row in variant["tasks"].items()}
            for name, variant in result["variants"].items() if name != result["baseline"]}


def _plateau_list(entry: Mapping[str, Any], epochs: int) -> str:
    """``y2 3, y3 12``: each other task's plateau epoch (with its epoch count where it differs from ``epochs``)."""
    parts = [f"{html.escape(o)} {e}" + ("" if entry["epochs"][o] == epochs else f"/{entry['epochs'][o]}")
             for o, e in entry["plateaus"].items()]
    return ", ".join(parts) or "&ndash;"


def _breakable(name: str) -> str:
    """A variant name that may wrap after its ``+`` and ``/`` (narrow table headers)."""
    return re.sub(r"([+/])", r"\1<wbr>", html.escape(name))


def _signals_section(run: RunData) -> str:
    gains = _variant_gains(run)
    table = curve_table(run.records)
    if not table:
        return _absent("No single-task training curves (needs single-task baselines with 2+ epochs).")
    fractions = list(next(iter(table.values()))["signals"].relative_slopes)
    middle = 0.5 if 0.5 in fractions else fractions[len(fractions) // 2]
    others = auxiliary_signals({task: entry["signals"] for task, entry in table.items()}, middle)
    rows = []
    for task, entry in table.items():
        s = entry["signals"]
        cells = "".join(f"<td>{s.relative_slopes[f]:+.3f}</td>" for f in fractions)
        aux = others[task]
        aux_slope = "&ndash;" if aux["slope"] is None else f"{aux['slope']:+.3f}"
        gain_cells = "".join(f"<td>{_pct(by_task.get(task))}</td>" for by_task in gains.values())
        rows.append(f"<tr><td class='name'>{html.escape(task)}</td>{cells}<td>{s.plateau_epoch} / {s.epochs}</td>"
                    f"<td class='name aux'>{_plateau_list(aux, s.epochs)}</td><td>{aux_slope}</td>{gain_cells}</tr>")
    percent = int(middle * 100)
    head = ("<tr><th class='name' rowspan='2'>task</th>"
            f"<th colspan='{len(fractions)}'>slope of its loss at (share of training)</th>"
            "<th rowspan='2'>plateau epoch</th><th colspan='2'>the other tasks</th>"
            + (f"<th colspan='{len(gains)}'>gain in</th>" if gains else "") + "</tr><tr>"
            + "".join(f"<th>{int(f * 100)}%</th>" for f in fractions)
            + f"<th class='name'>plateau epochs</th><th>mean slope at {percent}%</th>"
            + "".join(f"<th>{_breakable(name)}</th>" for name in gains) + "</tr>")
    return ("<p class='lead'>Each task's single-task training loss: its slope per epoch at shares of training, "
            "relative to its first-epoch loss, and its plateau epoch (the first after which the loss falls by less "
            "than 1%); beside them the other tasks' (its auxiliaries') plateau epochs and mean slope, then the "
            "task's gain in each multi-task variant. Bingel &amp; S&oslash;gaard (2017) found gains more likely when "
            "the main task's curve plateaus early (flattens after few epochs) while the auxiliary tasks' curves "
            "keep improving (plateau late, slope still negative).</p>"
            f"<div class='wide'><table class='signals'>{head}" + "".join(rows) + "</table></div>")


def _weights_section(run: RunData) -> str:
    parts = []
    for model in run.models():
        weights: dict[str, list[tuple[int, float]]] = {}
        for record in run.model_records(model):
            for task, value in (record.get("weights") or {}).items():
                if value is not None:
                    weights.setdefault(task, []).append((int(record["epoch"]), float(value)))
        if len(weights) < 2:
            continue
        if all(len({v for _, v in points}) == 1 for points in weights.values()):
            fixed = ", ".join(f"{task} {points[0][1]:g}" for task, points in weights.items())
            parts.append(_absent(f"{model}: task weights are constant over training ({fixed})."))
        else:
            parts.append(_img(plots.weights_over_time(model, weights), f"task weights of {model}"))
    return "".join(parts) or _absent("No task weights logged (the balancing method has none).")


MATRICES = (("conflict", "gradient cosine similarity (shared parameters)", "cosine"),
            ("affinity", "lookahead affinity Z[from \u2192 onto] (TAG)", "affinity"))


def _tracked_models(run: RunData) -> list[tuple[str, Mapping[str, Any]]]:
    """The multi-task variants of a compare run (group models left out), else every non-baseline model."""
    if run.compare:
        return [(name, v) for name, v in run.compare.get("variants", {}).items() if v.get("kind") == "multi"]
    return [(m, {}) for m in run.models() if not m.startswith(("single/", "group/"))]


def _skip_reason(run: RunData, model: str, variant: Mapping[str, Any]) -> str | None:
    if variant.get("tracking_skipped"):
        return str(variant["tracking_skipped"])
    return next((str(r["tracking_skipped"]) for r in run.model_records(model) if r.get("tracking_skipped")), None)


def variant_matrices(run: RunData) -> list[dict[str, Any]]:
    """Per tracked variant and measure: the mean matrix over every logged epoch of every seed, or the skip reason.

    Each entry holds ``model``, ``key``, ``matrix`` ({a: {b: mean}}), ``epochs``, ``seeds``, ``grouping`` (True
    for the affinity a compare run chose its task groups by, taken from compare.json) and ``skipped``.
    """
    chosen = (run.compare or {}).get("grouping_affinity") or {}
    out = []
    for model, variant in _tracked_models(run):
        skipped = _skip_reason(run, model, variant)
        records, seeds = run.all_seed_records(model)
        for key, _, _ in MATRICES:
            entry: dict[str, Any] = {"model": model, "key": key, "grouping": False, "skipped": skipped}
            if key == "affinity" and chosen.get("variant") == model and chosen.get("matrix"):
                entry.update(matrix=chosen["matrix"], epochs=chosen["epochs"], seeds=len(chosen.get("seeds") or []),
                             grouping=True, missing_pairs=chosen.get("missing_pairs") or [])
            else:
                matrix, epochs = mean_logged_matrix(records, key)
                entry.update(matrix=matrix, epochs=epochs, seeds=seeds)
            if entry["epochs"] or skipped:
                out.append(entry)
    return out


def _matrix_figure(entry: Mapping[str, Any]) -> str:
    names = list(entry["matrix"])
    values = [[entry["matrix"][a].get(b) for b in names] for a in names]
    title = next(t for k, t, _ in MATRICES if k == entry["key"])
    label = next(lab for k, _, lab in MATRICES if k == entry["key"])
    caption = f"{html.escape(entry['model'])}: mean over {entry['epochs']} logged epoch(s) of {entry['seeds']} seed(s)."
    if entry["grouping"]:
        caption += (" <b>This is the matrix <code>taskloom affinity</code> prints and <code>--groups</code> chose the "
                    "task groups by.</b>")
        if entry.get("missing_pairs"):
            pairs = ", ".join(f"{a}&rarr;{b}" for a, b in entry["missing_pairs"][:10])
            caption += f" Never measured, left out of the grouping: {pairs}."
    uri = plots.heatmap(values, names, f"{entry['model']}\n{title}", label)
    return (f"<figure>{_img(uri, entry['key'] + ' heatmap of ' + entry['model'])}"
            f"<figcaption>{caption}</figcaption></figure>")


def _conflict_section(run: RunData) -> str:
    entries = variant_matrices(run)
    parts = ["<p class='lead'>Per multi-task variant (models of suggested task groups left out): the cosine "
             "similarity of the task gradients on the shared parameters (Yu et al. 2020) and TAG's lookahead "
             "affinity, how much a step on the row task lowers the column task's loss (Fifty et al. 2021); "
             "negative values mean the tasks pull against each other.</p>"] if entries else []
    for model in dict.fromkeys(e["model"] for e in entries):
        mine = [e for e in entries if e["model"] == model]
        parts.append(f"<h3>{html.escape(model)}</h3>")
        if mine[0]["skipped"]:
            reason = html.escape(mine[0]["skipped"])
            parts.append(f"<p class='note'>Not measured for {html.escape(model)}: {reason}.</p>")
            continue
        parts.append("<div class='pair'>" + "".join(_matrix_figure(e) for e in mine if e["epochs"]) + "</div>")
    chosen = (run.compare or {}).get("grouping_affinity") or {}
    if chosen.get("skipped"):
        parts.append(f"<p class='note'>{html.escape(chosen['skipped'])}.</p>")
    for key, _, _ in MATRICES:
        if not any(e["key"] == key and e["epochs"] for e in entries) and not any(e["skipped"] for e in entries):
            parts.append(_absent(f"No {key} logged in this run."))
    return "".join(parts) + _branching_trees(run)


def _pareto_section(run: RunData) -> str:
    """Pareto front and relative-change strip over the tasks every variant has a metric for; a task without one
    (undefined on the test split) is named, shown as a grey cell in the strip, and left out of the front."""
    measured_by_variant: dict[str, dict[str, float | None]] = {}
    spec: Mapping[str, Any] = {}
    if run.compare:
        spec = run.compare["tasks"]
        result = analysis_of(run.compare)
        measured_by_variant = {name: {t: variant["tasks"][t].get("mean") for t in spec}
                               for name, variant in result["variants"].items()
                               if variant.get("kind") != "ablation"}  # trained on fewer tasks
    measured = [t for t in spec if all(_finite(values.get(t)) for values in measured_by_variant.values())]
    unmeasured = [t for t in spec if t not in measured]
    variants = {name: {t: float(values[t]) for t in measured} for name, values in measured_by_variant.items()}
    if not measured or len(variants) < 2:
        return _absent("Needs per-task metrics of at least two variants on at least one task.")
    left_out = "" if not unmeasured else (
        f"<p class='note'>Left out of the Pareto front (no test metric for every variant, e.g. undefined on the "
        f"test split): {', '.join(html.escape(t) for t in unmeasured)}; grey cells in the strip.</p>")
    higher = [bool(spec[t]["higher_is_better"]) for t in measured]
    front = plots.pareto_front(np.array([[variants[v][t] for t in measured] for v in variants], dtype=float), higher)
    on_front = dict(zip(variants, (bool(f) for f in front)))
    changes, baseline = _relative_changes(run, variants, list(spec))
    strip = ("<h3>Relative change per task, every variant</h3>"
             + _img(plots.relative_change_strip(changes, list(spec), on_front, baseline),
                    "relative change per task of every variant") if changes else "")
    count = f"{len(measured)} task{'s' if len(measured) != 1 else ''}"
    lead = (f"<p class='lead'>Pareto-optimal over {'all ' if not unmeasured else ''}{count} (test "
            f"means; no other variant is at least as good on every task and better on one): "
            f"{', '.join(html.escape(v) for v, f in on_front.items() if f)}.</p>")
    if len(measured) < 2:
        return lead + left_out + strip + _absent("The task-pair plots need metrics on at least two tasks.")
    note = "" if len(measured) <= plots.MAX_PAIR_TASKS else (
        f"<p class='lead'>The pair plots show the first {plots.MAX_PAIR_TASKS} of {len(measured)} tasks; the front, "
        "and the strip above, cover all tasks.</p>")
    uri = plots.pareto_scatter(variants, measured, higher, [spec[t].get("metric") for t in measured])
    return (lead + left_out + strip + "<h3>Per-task metrics, task pairs</h3>" + note
            + _img(uri, "Pareto scatter of per-task metrics"))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _relative_changes(run: RunData, variants: Mapping[str, Mapping[str, float]],
                      tasks: list[str]) -> tuple[dict[str, dict[str, float | None]], str]:
    """Each variant's relative change per task against the baseline (the baseline's own row is 0)."""
    if run.compare:
        result = analysis_of(run.compare)
        baseline = result["baseline"]
        return ({name: {t: (0.0 if name == baseline else result["variants"][name]["tasks"][t].get("relative_change"))
                        for t in tasks} for name in variants}, baseline)
    gains = _variant_gains(run)
    rows = {"single-task": {t: 0.0 for t in tasks}}
    rows.update({name: dict(by_task) for name, by_task in gains.items()})
    return rows, "single-task"


TREE_FILES = {  # structure file -> (title, what the boxes mean)
    "branching.json": ("Branching tree", "split by task affinity (Lu et al. 2017)"),
    "learn_to_branch.json": ("Learned branching tree", "the argmax parents of the learned branching distributions "
                             "(Guo, Lee & Ulbricht 2020)"),
}


def _branching_trees(run: RunData) -> str:
    """Each branching model's tree (its branching.json or learn_to_branch.json, in the run directory or a model's
    directory); "" for none."""
    parts = []
    for file, (title, what) in TREE_FILES.items():
        found = sorted(p for pattern in (file, f"*/{file}", f"*/*/{file}") for p in run.path.glob(pattern))
        if not found:
            continue
        parts.append(f"<h3>{title}</h3><p class='lead'>Layers from the input (bottom) to the task heads (top); a blue "
                     f"box is shared by several tasks, {what}.</p>")
        for path in found:
            tree = json.loads(path.read_text())
            name = path.parent.relative_to(run.path).as_posix() if path.parent != run.path else run.path.name
            parts.append(f"<h4>{html.escape(name)}</h4>{tree_svg(tree)}{_tree_note(tree)}")
    return "".join(parts)


def _tree_note(tree: dict) -> str:
    """Branching's split decisions, or whether a learned tree was fixed (and after how many epochs)."""
    if "splits" in tree:
        return splits_table(tree)
    if tree.get("final"):
        return f"<p class='note'>The tree was fixed after epoch {tree.get('fixed_after')}.</p>"
    return "<p class='note'>Training ended before the tree was fixed; this is the argmax tree of its last epoch.</p>"


def _config_section(run: RunData) -> str:
    if run.config_text is None:
        return _absent("No config.yaml in this run directory.")
    return f"<pre>{html.escape(run.config_text)}</pre>"


BUILDERS: dict[str, Callable[[RunData], str]] = {
    "comparison": _comparison_section, "curves": _curves_section, "signals": _signals_section,
    "weights": _weights_section, "conflict": _conflict_section, "pareto": _pareto_section,
    "config": _config_section, "search": lambda run: search_section(run.auto or {}),
}


def render_report(run: RunData) -> str:
    """The report's HTML text for loaded run data."""
    body = []
    sections = SECTIONS + (OPTIONAL_SECTIONS if run.auto is not None else [])
    for key, title in sections:
        try:
            content = BUILDERS[key](run)
        except (KeyError, TypeError, ValueError) as error:
            log.warning("report section %r could not be drawn: %s", key, error)
            content = _absent(f"This section could not be drawn from the run's files: {error}")
        body.append(f"<section id='{key}'><h2>{html.escape(title)}</h2>{content}</section>")
    nav = "".join(f"<a href='#{key}'>{html.escape(title)}</a>" for key, title in sections)
    name = html.escape(run.path.name)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>taskloom report: {name}</title><style>{CSS}</style></head><body>"
            f"<h1>taskloom report: {name}</h1><p class='lead'>Does multi-task learning help here, and for which "
            f"task?</p><nav>{nav}</nav>" + "".join(body) + "</body></html>")


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.html (self-contained: embedded PNGs, inline CSS, no scripts) and return its path."""
    run = load_run(run_dir)
    path = run.path / "report.html"
    path.write_text(render_report(run), encoding="utf-8")
    log.info("report written to %s", path)
    return path
