"""Flatness scores read off a landscape slice and its persistence diagrams."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from topselect.exceptions import InvalidInputError
from topselect.topology._persistence import Diagrams

__all__ = [
    "DEFAULT_BASIN_LEVELS",
    "basin_profile",
    "flatness_scores",
    "persistence_entropy",
    "total_persistence",
]

#: Loss increments (in loss units, e.g. nats for cross-entropy) above the centre's loss at
#: which the basin area is reported.
DEFAULT_BASIN_LEVELS: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)

_KING = np.ones((3, 3), dtype=bool)


def total_persistence(diagrams: Diagrams, dim: int) -> float:
    """Return the sum of (death - birth) over the finite bars of dimension ``dim``."""
    bars = diagrams.finite(dim)
    return float(np.sum(bars[:, 1] - bars[:, 0]))


def persistence_entropy(diagrams: Diagrams, dim: int) -> float:
    """Return the Shannon entropy (nats) of the finite bar lengths of dimension ``dim``.

    The lengths are normalized to sum to one. An empty set of finite bars gives 0.
    """
    bars = diagrams.finite(dim)
    lengths = bars[:, 1] - bars[:, 0]
    total = lengths.sum()
    if total <= 0:
        return 0.0
    p = lengths / total
    return float(-np.sum(p * np.log(p)))


def basin_profile(
    values: ArrayLike, center: tuple[int, int], levels: Sequence[float]
) -> NDArray[np.float64]:
    """Measure the basin around ``center`` at several loss levels above the centre.

    ``A(delta)`` is the fraction of grid cells in the 8-connected component of the
    sublevel set ``{values <= values[center] + delta}`` that contains ``center``. It is the
    area of the H0 class born at or below the centre, read at that level, so it grows from
    one cell towards 1 as ``delta`` rises.

    Args:
        values: Grid of shape ``(rows, cols)``. NaN and ``+inf`` cells never join a basin.
        center: ``(row, col)`` index of the cell holding the trained parameters.
        levels: Non-negative increments ``delta`` in the units of ``values``.

    Returns:
        Array of shape ``(len(levels),)`` with areas in ``(0, 1]``.

    Raises:
        InvalidInputError: When ``center`` lies outside the grid, its value is not
            finite, or a level is negative.
    """
    from scipy import ndimage

    grid = np.asarray(values, dtype=np.float64)
    row, col = center
    if not (0 <= row < grid.shape[0] and 0 <= col < grid.shape[1]):
        raise InvalidInputError(f"center {center} lies outside the grid of shape {grid.shape}.")
    base = grid[row, col]
    if not np.isfinite(base):
        raise InvalidInputError(f"the value at center {center} is {base}, not a finite loss.")
    areas = np.empty(len(levels))
    for i, delta in enumerate(levels):
        if delta < 0:
            raise InvalidInputError(f"basin levels must be >= 0, but got {delta}.")
        with np.errstate(invalid="ignore"):
            mask = grid <= base + delta
        labels, _ = ndimage.label(mask, structure=_KING)
        areas[i] = np.count_nonzero(labels == labels[row, col]) / grid.size
    return areas


def flatness_scores(
    values: ArrayLike,
    diagrams: Diagrams,
    center: tuple[int, int],
    levels: Sequence[float] = DEFAULT_BASIN_LEVELS,
) -> dict[str, float]:
    """Compute every flatness score of one landscape slice.

    Keys (all plain floats, loss values in the units of ``values``):
    ``center_loss`` (loss at the trained parameters), ``loss_range`` (max - min of the
    finite values), ``tp_h0`` and ``tp_h1`` (total persistence of finite bars),
    ``tp_h0_norm`` and ``tp_h1_norm`` (divided by ``loss_range``, 0 when the range is 0),
    ``entropy_h0`` and ``entropy_h1`` (persistence entropy), ``n_bars_h0`` and
    ``n_bars_h1`` (finite bar counts), ``basin_area_<delta>`` for every level, and
    ``basin_integral`` (mean of ``A(delta)`` over ``[0, max(levels)]``, trapezoid rule).
    """
    grid = np.asarray(values, dtype=np.float64)
    low, high = diagrams.value_range
    loss_range = high - low
    scores: dict[str, float] = {
        "center_loss": float(grid[center]),
        "loss_range": float(loss_range),
        "n_nonfinite": float(diagrams.n_nonfinite),
    }
    for dim in (0, 1):
        tp = total_persistence(diagrams, dim)
        scores[f"tp_h{dim}"] = tp
        scores[f"tp_h{dim}_norm"] = tp / loss_range if loss_range > 0 else 0.0
        scores[f"entropy_h{dim}"] = persistence_entropy(diagrams, dim)
        scores[f"n_bars_h{dim}"] = float(len(diagrams.finite(dim)))
    levels = sorted(levels)
    areas = basin_profile(grid, center, levels)
    for delta, area in zip(levels, areas, strict=True):
        scores[basin_key(delta)] = float(area)
    scores["basin_integral"] = _mean_area(levels, areas, grid, center)
    return scores


def basin_key(delta: float) -> str:
    """Return the score name of the basin area at level ``delta``, e.g. ``basin_area_0.1``."""
    return f"basin_area_{delta:g}"


def _mean_area(
    levels: Sequence[float], areas: NDArray[np.float64], grid: NDArray[np.float64], center
) -> float:
    if not levels or levels[-1] <= 0:
        return float(areas[-1]) if len(areas) else 0.0
    xs = np.concatenate([[0.0], levels]) if levels[0] > 0 else np.asarray(levels, float)
    ys = areas
    if levels[0] > 0:
        ys = np.concatenate([basin_profile(grid, center, [0.0]), areas])
    return float(np.trapezoid(ys, xs) / xs[-1])
