"""Matplotlib figures of landscape slices, persistence diagrams and trajectories.

Every function returns a figure without showing it; the caller saves and closes it. The
Agg backend is selected when no backend was chosen, so figures render without a screen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from topselect.landscape import LandscapeResult
    from topselect.topology import Diagrams
    from topselect.trajectory import TrajectorySummary

__all__ = ["diagram_figure", "landscape_figure", "trajectory_figure"]


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def landscape_figure(
    result: LandscapeResult,
    basin_delta: float = 0.1,
    axis_labels: tuple[str, str] = (
        "direction 1 (filter-normalized units)",
        "direction 2 (filter-normalized units)",
    ),
    path: np.ndarray | None = None,
) -> Figure:
    """Draw the slice as filled contours, with the centre and its basin outlined.

    The basin outline is the level ``center_loss + basin_delta``; the filled area
    containing the centre is the one measured by ``basin_area_<basin_delta>``.
    ``axis_labels`` name the slice's first and second directions. ``path`` is an optional
    ``(T, 2)`` array of slice coordinates ``(a, b)``, drawn as a line from its first point
    (marked as the start) to its last.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.2, 4.4))
    values = np.where(np.isfinite(result.values), result.values, np.nan)
    a, b = np.meshgrid(result.axis, result.axis, indexing="ij")
    filled = axes.contourf(b, a, values, levels=30, cmap="viridis")
    figure.colorbar(filled, ax=axes, label="probe-set loss")
    center_loss = result.scores["center_loss"]
    level = center_loss + basin_delta
    if np.nanmin(values) < level < np.nanmax(values):
        axes.contour(b, a, values, levels=[level], colors="white", linewidths=1.5)
    if path is not None and len(path):
        axes.plot(path[:, 1], path[:, 0], color="orange", marker=".", label="trajectory")
        axes.plot(path[0, 1], path[0, 0], marker="o", color="orange", label="initialization")
    axes.plot(0, 0, marker="*", color="red", markersize=12, label="trained parameters")
    area = result.scores.get(f"basin_area_{basin_delta:g}")
    title = f"Loss slice (centre loss {center_loss:.4g})"
    if area is not None:
        title += f"\nbasin at +{basin_delta:g}: {area:.1%} of the slice (white outline)"
    axes.set_title(title, fontsize=9)
    axes.set_xlabel(axis_labels[1])
    axes.set_ylabel(axis_labels[0])
    axes.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    return figure


def diagram_figure(diagrams: Diagrams, title: str = "Sublevel persistence") -> Figure:
    """Draw the H0 and H1 diagrams; essential bars sit on a line marked "inf" at the top."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.6, 4.4))
    # The axes span the slice's loss range, where every birth and finite death lies.
    low, high = diagrams.value_range
    if diagrams.fill_value is not None:
        high = diagrams.fill_value
    span = high - low if high > low else 1.0
    infinity_line = high + 0.1 * span
    for dim, bars, marker in ((0, diagrams.h0, "o"), (1, diagrams.h1, "^")):
        if len(bars) == 0:
            continue
        deaths = np.where(np.isfinite(bars[:, 1]), bars[:, 1], infinity_line)
        axes.scatter(bars[:, 0], deaths, marker=marker, label=f"H{dim} ({len(bars)})", alpha=0.8)
    lims = (low - 0.05 * span, infinity_line + 0.05 * span)
    axes.plot(lims, lims, color="grey", linewidth=0.8)
    axes.axhline(infinity_line, color="grey", linestyle="--", linewidth=0.8)
    axes.text(lims[0], infinity_line, " inf", va="bottom", fontsize=8, color="grey")
    axes.set_xlim(lims)
    axes.set_ylim(lims)
    axes.set_xlabel("birth (loss)")
    axes.set_ylabel("death (loss)")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def trajectory_figure(summary: TrajectorySummary) -> Figure:
    """Draw the waypoints' sketches in their top-2 principal plane, coloured by loss."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.8, 4.2))
    points = np.asarray(summary.sketches, dtype=float)
    if len(points) >= 2:
        centred = points - points.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        plane = centred @ vt[:2].T
        if plane.shape[1] == 1:
            plane = np.column_stack([plane[:, 0], np.zeros(len(plane))])
    else:
        plane = np.zeros((len(points), 2))
    losses = np.array([np.nan if v is None else v for v in summary.losses], dtype=float)
    axes.plot(plane[:, 0], plane[:, 1], color="grey", linewidth=0.8)
    scatter = axes.scatter(plane[:, 0], plane[:, 1], c=losses, cmap="plasma", zorder=3)
    figure.colorbar(scatter, ax=axes, label="probe-set loss")
    for fraction, (x, y) in zip(summary.fractions, plane, strict=False):
        axes.annotate(
            f"{fraction:.2g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    axes.set_title("Trajectory (sketch PCA plane; labels: progress)", fontsize=9)
    axes.set_xlabel("PC 1")
    axes.set_ylabel("PC 2")
    figure.tight_layout()
    return figure
