"""An inline SVG of a branching model's tree (``branching.json``, see :mod:`taskloom.sharing.branching`)."""
from __future__ import annotations

import html
from typing import Any, Mapping

ROW = 56
BOX_H = 24


def _positions(count: int, width: float) -> list[float]:
    return [width * (k + 0.5) / count for k in range(count)]


def tree_svg(tree: Mapping[str, Any]) -> str:
    """The layers from the input (bottom) to the task heads (top); each box is a branch, labelled with its tasks."""
    layers = tree["layers"]
    heads = [(name, b) for b, spec in enumerate(layers[-1]) for name in spec["tasks"]]
    widest = max([len(heads)] + [len(layer) for layer in layers])
    width = max(320, 150 * widest)
    rows = len(layers) + 2  # input, layers, heads
    height = ROW * rows + 10
    y = {row: height - ROW * (row + 0.5) for row in range(rows)}  # row 0: input at the bottom
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             f"aria-label='branching tree'><style>text{{font:11px sans-serif}}</style>"]
    xs = [[width / 2]] + [_positions(len(layer), width) for layer in layers]
    head_x = _positions(len(heads), width)
    for d, layer in enumerate(layers, start=1):
        for b, spec in enumerate(layer):
            parent_x = xs[d - 1][spec["parent"] if d > 1 else 0]
            parts.append(f"<line x1='{xs[d][b]:.1f}' y1='{y[d] + BOX_H / 2:.1f}' x2='{parent_x:.1f}' "
                         f"y2='{y[d - 1] - BOX_H / 2:.1f}' stroke='#888'/>")
    for k, (name, b) in enumerate(heads):
        parts.append(f"<line x1='{head_x[k]:.1f}' y1='{y[rows - 1] + BOX_H / 2:.1f}' x2='{xs[-1][b]:.1f}' "
                     f"y2='{y[rows - 2] - BOX_H / 2:.1f}' stroke='#888'/>")

    def box(x: float, row: int, label: str, fill: str) -> None:
        w = min(140, 12 + 6.5 * len(label))
        parts.append(f"<rect x='{x - w / 2:.1f}' y='{y[row] - BOX_H / 2:.1f}' width='{w:.1f}' height='{BOX_H}' "
                     f"rx='4' fill='{fill}' stroke='#555'/><text x='{x:.1f}' y='{y[row] + 4:.1f}' "
                     f"text-anchor='middle'>{html.escape(label[:22])}</text>")

    box(xs[0][0], 0, "input", "#eee")
    for d, layer in enumerate(layers, start=1):
        for b, spec in enumerate(layer):
            box(xs[d][b], d, f"layer {d - 1}: " + ",".join(spec["tasks"]), "#dbe9f6" if len(spec["tasks"]) > 1
                else "#f6e3db")
    for k, (name, _) in enumerate(heads):
        box(head_x[k], rows - 1, name, "#fff")
    parts.append("</svg>")
    return "".join(parts)


def splits_table(tree: Mapping[str, Any]) -> str:
    """One row per split decision: the epoch, the layer and the groups (or that no split paid off)."""
    rows = []
    for split in tree.get("splits", []):
        groups = split.get("groups")
        what = "no split paid off; the tree is final" if groups is None else \
            " | ".join("{" + ", ".join(g) + "}" for g in groups)
        rows.append(f"<tr><td>{split['epoch']}</td><td>{split['layer']}</td><td>{html.escape(what)}</td></tr>")
    if not rows:
        return "<p class='note'>No split was made (training ended before the first split epoch).</p>"
    return "<table><tr><th>epoch</th><th>layer</th><th>groups</th></tr>" + "".join(rows) + "</table>"
