"""Figures logged as PNG artifacts."""

from topselect.plots._figures import diagram_figure, landscape_figure, trajectory_figure

__all__ = ["diagram_figure", "landscape_figure", "trajectory_figure"]
