"""The report's "Search" section for a ``taskloom auto`` run: trials, pruned count, best so far, importances."""
from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

from taskloom.report import plots


def best_so_far_plot(curve: Sequence[Mapping[str, Any]]) -> str:
    """Each complete trial's validation score and the best so far against seconds since the search began."""
    figure, axis = plots.plt.subplots(figsize=(7, 3.2))
    seconds = [p["seconds"] for p in curve]
    axis.scatter(seconds, [p["value"] for p in curve], s=14, color="#8a94a6", label="trial")
    axis.step(seconds, [p["best"] for p in curve], where="post", color="#116b2f", label="best so far")
    axis.set(title="search: validation selection score", xlabel="seconds since the search began", ylabel="score")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return plots.to_data_uri(figure)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def search_section(auto: Mapping[str, Any]) -> str:
    """HTML of the search: the recommendation, counts by state, the curve, importances and every trial."""
    parts = []
    recommendation = auto.get("recommendation")
    if recommendation:
        parts.append(f"<p class='note'>{html.escape(recommendation['text'])}</p>")
    counts = auto.get("counts", {})
    shown = {**counts, "pruned": counts.get("pruned", 0)}
    parts.append(f"<p>{len(auto.get('trials', []))} trials: "
                 + ", ".join(f"{n} {html.escape(state)}" for state, n in shown.items()) + ".</p>")
    if auto.get("best_so_far"):
        parts.append(f"<img src='{best_so_far_plot(auto['best_so_far'])}' alt='best validation score so far'>")
    importances = auto.get("importances") or {}
    if "values" in importances:
        rows = "".join(f"<tr><td class='name'>{html.escape(k)}</td><td>{v:.3f}</td></tr>"
                       for k, v in importances["values"].items())
        parts.append(f"<h3>Parameter importances</h3><table><tr><th class='name'>parameter</th>"
                     f"<th>importance</th></tr>{rows}</table>")
    else:
        parts.append(f"<p class='absent'>Parameter importances omitted: "
                     f"{html.escape(importances.get('omitted', 'not computed'))}</p>")
    names = list(dict.fromkeys(k for t in auto.get("trials", []) for k in t["params"]))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["trial", "state", "value", "seconds", *names])
    rows = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in
                                    [t["number"], t["state"], t["value"], t["seconds"],
                                     *(t["params"].get(n) for n in names)]) + "</tr>"
                   for t in auto.get("trials", []))
    parts.append(f"<h3>Trials</h3><div class='wide'><table><tr>{head}</tr>{rows}</table></div>")
    return "".join(parts)
