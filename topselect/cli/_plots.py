"""The figure of ``topselect compare --plot``: distances, diagrams, class spread, CKA."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from topselect.cli._analysis import DistanceMatrix
    from topselect.cli._render import Report

__all__ = ["compare_figure", "save_compare_figure"]


def save_compare_figure(
    path: Path,
    report: Report,
    diagrams: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
) -> None:
    """Draw :func:`compare_figure` and write it to ``path`` as PNG."""
    import matplotlib.pyplot as plt

    from topselect.tracking._artifacts import png_bytes

    figure = compare_figure(report, diagrams)
    try:
        path.write_bytes(png_bytes(figure))
    finally:
        plt.close(figure)


def compare_figure(
    report: Report,
    diagrams: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
) -> Figure:
    """Draw four panels: a diagram distance heatmap, all diagrams overlaid by class,
    the objective values of each class, and the CKA heatmap (when computed).

    Panels without data state that instead of staying blank.
    """
    from topselect.plots._figures import _pyplot

    plt = _pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(11, 9.5))
    matrix = report.distances[0] if report.distances else None
    _distance_panel(axes[0, 0], matrix)
    _overlay_panel(axes[0, 1], report, diagrams)
    _class_panel(axes[1, 0], report)
    _cka_panel(axes[1, 1], report)
    figure.suptitle(f"topselect compare: {report.header.get('experiment') or 'selected runs'}")
    figure.tight_layout()
    return figure


def _empty(axes: Axes, title: str, message: str) -> None:
    axes.set_title(title, fontsize=9)
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()


def _heatmap(axes: Axes, labels: Sequence[str], values: np.ndarray, title: str, bar: str) -> None:
    import matplotlib as mpl

    shown = np.where(np.isfinite(values), values, np.nan)
    colormap = mpl.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = axes.imshow(shown, cmap=colormap)
    ticks = range(len(labels))
    size = 7 if len(labels) <= 30 else 4
    axes.set_xticks(list(ticks), labels, rotation=90, fontsize=size)
    axes.set_yticks(list(ticks), labels, fontsize=size)
    axes.set_xlabel("trial")
    axes.set_title(title, fontsize=9)
    axes.figure.colorbar(image, ax=axes, label=bar, shrink=0.8)


def _distance_panel(axes: Axes, matrix: DistanceMatrix | None) -> None:
    title = "Diagram distances"
    if matrix is None or len(matrix.labels) < 2:
        _empty(axes, title, "fewer than two trials with diagram.json")
        return
    title = f"{matrix.dimension.upper()} {matrix.metric} distance (grey: infinite)"
    _heatmap(axes, matrix.labels, matrix.values, title, "loss units")


def _class_colors(report: Report) -> dict[str | None, object]:
    import matplotlib as mpl

    classes = sorted({e.record.class_id for e in report.ranking if e.record.class_id})
    palette = mpl.colormaps["tab10"]
    colors: dict[str | None, object] = {c: palette(i % 10) for i, c in enumerate(classes)}
    colors[None] = "grey"
    return colors


def _overlay_panel(
    axes: Axes,
    report: Report,
    diagrams: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
) -> None:
    title = "Persistence diagrams of all trials, by class"
    if not diagrams:
        _empty(axes, title, "no diagram.json read")
        return
    colors = _class_colors(report)
    class_of = {e.record.run_id: e.record.class_id for e in report.ranking}
    points = [(b, d) for bars in diagrams.values() for key in ("h0", "h1") for b, d in bars[key]]
    finite = [v for pair in points for v in pair if math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = high - low if high > low else 1.0
    infinity_line = high + 0.1 * span
    seen: set[str] = set()
    for run_id, bars in diagrams.items():
        class_id = class_of.get(run_id)
        for key, marker in (("h0", "o"), ("h1", "^")):
            array = np.asarray(bars[key], dtype=float).reshape(-1, 2)
            if len(array) == 0:
                continue
            deaths = np.where(np.isfinite(array[:, 1]), array[:, 1], infinity_line)
            label = f"{class_id or 'no class'} {key.upper()}"
            axes.scatter(
                array[:, 0], deaths, marker=marker, s=14, alpha=0.6, color=colors[class_id],
                label=None if label in seen else label,
            )  # fmt: skip
            seen.add(label)
    lims = (low - 0.05 * span, infinity_line + 0.05 * span)
    axes.plot(lims, lims, color="grey", linewidth=0.8)
    axes.axhline(infinity_line, color="grey", linestyle="--", linewidth=0.8)
    axes.text(lims[0], infinity_line, " inf (essential bars)", va="bottom", fontsize=7)
    axes.set_xlim(lims)
    axes.set_ylim(lims)
    axes.set_xlabel("birth (loss)")
    axes.set_ylabel("death (loss)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=6, loc="lower right", ncol=2)


def _class_panel(axes: Axes, report: Report) -> None:
    title = "Objective value by class (each dot a trial)"
    groups: dict[str, list[float]] = {}
    for entry in report.ranking:
        value = entry.ranked_value
        if value is not None and math.isfinite(value):
            groups.setdefault(entry.record.class_id or "no class", []).append(value)
    if not groups:
        _empty(axes, title, "no trial with a value")
        return
    names = sorted(groups, key=lambda n: (n == "no class", n))
    colors = _class_colors(report)
    for x, name in enumerate(names):
        values = groups[name]
        color = colors.get(None if name == "no class" else name, "grey")
        axes.scatter([x] * len(values), values, color=color, s=18, alpha=0.8)
        if len(values) > 1:
            axes.vlines(x, min(values), max(values), color=color, linewidth=2, alpha=0.4)
    axes.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
    axes.set_ylabel("value (completed) or last intermediate value (pruned)")
    axes.set_title(title, fontsize=9)


def _cka_panel(axes: Axes, report: Report) -> None:
    title = "Linear CKA of penultimate features"
    equivalence = report.equivalence
    if equivalence is None or len(equivalence.labels) < 2:
        _empty(axes, title, "not computed (pass --equivalence)")
        return
    _heatmap(axes, equivalence.labels, equivalence.cka, title + " (grey: undefined)", "CKA")
