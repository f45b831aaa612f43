"""Sublevel-set persistence of a function sampled on a 2-D grid, computed with ripser."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from topselect.exceptions import InvalidInputError

__all__ = ["Diagrams", "sublevel_persistence"]

_logger = logging.getLogger(__name__)

# ripser stores filtration values as float32, which represents every integer up to 2**24
# exactly. Feeding ranks instead of values keeps the computation exact below that count.
_MAX_DISTINCT_VALUES = 2**24

# Offsets to the four forward neighbours of a cell in the 8-connected (king) grid graph.
# Every edge joins a cell to one forward neighbour, so these offsets list each edge once.
_FORWARD_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))


@dataclass(frozen=True)
class Diagrams:
    """H0 and H1 persistence diagrams of a sublevel-set filtration.

    Attributes:
        h0: Array of shape ``(k, 2)`` of (birth, death) pairs in the units of the input
            values, sorted by birth. The essential class (the component that never dies)
            has death ``inf`` and is always present for a non-empty grid.
        h1: Array of shape ``(m, 2)`` of (birth, death) pairs of loops. On a finite grid
            every loop eventually fills in, so every death is finite.
        n_nonfinite: Number of grid cells whose value was NaN or +inf. Those cells were
            placed at one level above every finite value before the computation; see
            :func:`sublevel_persistence`.
        fill_value: The level that replaced non-finite values, or ``None`` when there
            were none.
        value_range: Minimum and maximum of the finite input values.
    """

    h0: NDArray[np.float64]
    h1: NDArray[np.float64]
    n_nonfinite: int = 0
    fill_value: float | None = None
    value_range: tuple[float, float] = field(default=(0.0, 0.0))

    def finite(self, dim: int) -> NDArray[np.float64]:
        """Return the bars of dimension ``dim`` (0 or 1) whose death is finite."""
        bars = self.h0 if dim == 0 else self.h1
        return bars[np.isfinite(bars[:, 1])]


def sublevel_persistence(values: ArrayLike) -> Diagrams:
    """Compute H0 and H1 of the sublevel-set filtration of a 2-D grid of values.

    Cells are vertices of the 8-connected grid graph (each cell touches the eight cells
    around it). A vertex enters the filtration at its own value and an edge at the larger
    of its two end values. H1 is taken in the flag complex of that graph, which equals the
    cubical complex built from the cells as closed squares, so the diagrams do not change
    when the grid is flipped or transposed.

    The diagrams are exact in float64: ripser receives the dense ranks of the values
    (exact integers in its float32 arithmetic), and births and deaths are mapped back to
    the original values. Bars of zero length are not reported.

    Args:
        values: Array of shape ``(rows, cols)`` with ``rows, cols >= 1``. Integer and
            boolean arrays are converted to float64.

    Returns:
        The H0 and H1 diagrams, plus how many non-finite values were replaced.

    Raises:
        InvalidInputError: When ``values`` is not 2-D, is empty, contains ``-inf``, holds
            only non-finite values, or has more than 2**24 distinct values.

    Notes:
        NaN and ``+inf`` (a diverged loss) are replaced by one level above every finite
        value: the maximum finite value plus the finite range (plus 1 when the finite
        values are constant). Features that meet those cells then die at that level. The
        count is returned in ``n_nonfinite`` and logged as a warning, never dropped.
    """
    grid = _as_grid(values)
    grid, n_nonfinite, fill, value_range = _sanitize(grid)
    levels, ranks = np.unique(grid, return_inverse=True)
    if levels.size > _MAX_DISTINCT_VALUES:
        raise InvalidInputError(
            f"values has {levels.size} distinct entries, more than ripser represents exactly "
            f"({_MAX_DISTINCT_VALUES}). Use a coarser grid."
        )
    ranks = ranks.reshape(grid.shape) + 1  # ripser reads a zero entry as "no edge".
    h0, h1 = _ripser_diagrams(ranks)
    return Diagrams(
        h0=_to_values(h0, levels),
        h1=_to_values(h1, levels),
        n_nonfinite=n_nonfinite,
        fill_value=fill,
        value_range=value_range,
    )


def _as_grid(values: ArrayLike) -> NDArray[np.float64]:
    try:
        grid = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"values must be a 2-D array of numbers, but converting it failed: {error}"
        ) from error
    if grid.ndim != 2:
        raise InvalidInputError(
            f"values must be a 2-D array, but got shape {grid.shape}. "
            "Reshape a 1-D profile to (1, n)."
        )
    if grid.size == 0:
        raise InvalidInputError(f"values must not be empty, but got shape {grid.shape}.")
    return grid


def _sanitize(
    grid: NDArray[np.float64],
) -> tuple[NDArray[np.float64], int, float | None, tuple[float, float]]:
    if np.any(np.isneginf(grid)):
        raise InvalidInputError(
            "values contains -inf, which has no place in a sublevel filtration. "
            "Clip the values or mask the cells before calling sublevel_persistence."
        )
    bad = ~np.isfinite(grid)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return grid, 0, None, (float(grid.min()), float(grid.max()))
    if n_bad == grid.size:
        raise InvalidInputError(
            f"values has no finite entry (all {grid.size} are NaN or +inf); "
            "the model probably diverged."
        )
    low, high = float(grid[~bad].min()), float(grid[~bad].max())
    fill = high + (high - low if high > low else 1.0)
    _logger.warning(
        "%d of %d grid values were NaN or +inf; they enter the filtration at %.6g, "
        "above every finite value.",
        n_bad,
        grid.size,
        fill,
    )
    return np.where(bad, fill, grid), n_bad, fill, (low, high)


def _king_graph_edges(shape: tuple[int, int]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Return the end vertices (flat indices, first < second) of every king-graph edge."""
    rows, cols = shape
    index = np.arange(rows * cols).reshape(shape)
    first, second = [], []
    for d_row, d_col in _FORWARD_OFFSETS:
        row_stop = rows - d_row
        col_start, col_stop = max(0, -d_col), cols - max(0, d_col)
        if row_stop <= 0 or col_stop <= col_start:
            continue
        src = index[:row_stop, col_start:col_stop]
        dst = index[d_row : d_row + row_stop, col_start + d_col : col_stop + d_col]
        first.append(np.minimum(src, dst).ravel())
        second.append(np.maximum(src, dst).ravel())
    if not first:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    return np.concatenate(first), np.concatenate(second)


def _ripser_diagrams(ranks: NDArray[np.intp]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    from ripser import ripser  # Imported here to keep `import topselect` fast.
    from scipy import sparse

    flat = ranks.ravel().astype(np.float64)
    n = flat.size
    if n == 1:  # ripser rejects a 1 x 1 matrix; one cell is one essential component.
        return np.array([[flat[0], np.inf]]), np.empty((0, 2))
    first, second = _king_graph_edges(ranks.shape)
    diagonal = np.arange(n)
    rows = np.concatenate([diagonal, first])
    cols = np.concatenate([diagonal, second])
    weights = np.concatenate([flat, np.maximum(flat[first], flat[second])])
    matrix = sparse.coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
    result = ripser(matrix, distance_matrix=True, maxdim=1)
    h0, h1 = (np.asarray(d, dtype=np.float64).reshape(-1, 2) for d in result["dgms"][:2])
    return h0, h1


def _to_values(bars: NDArray[np.float64], levels: NDArray[np.float64]) -> NDArray[np.float64]:
    """Map (birth, death) ranks back to values, dropping bars of zero length."""
    if bars.size == 0:
        return np.empty((0, 2))
    births = levels[np.rint(bars[:, 0]).astype(np.intp) - 1]
    deaths = np.full(len(bars), np.inf)
    finite = np.isfinite(bars[:, 1])
    deaths[finite] = levels[np.rint(bars[finite, 1]).astype(np.intp) - 1]
    out = np.column_stack([births, deaths])
    out = out[out[:, 1] > out[:, 0]]
    return out[np.lexsort((out[:, 1], out[:, 0]))]
