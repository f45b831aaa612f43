"""Tests of the flatness scores: basin profile, total persistence, entropy, integral."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import topselect
from topselect.topology import (
    basin_key,
    basin_profile,
    flatness_scores,
    persistence_entropy,
    total_persistence,
)


def reference_basin_area(grid: np.ndarray, center: tuple[int, int], delta: float) -> float:
    """Return the fraction of cells 8-connected to ``center`` at or below its level + delta."""
    threshold = grid[center] + delta
    seen = np.zeros(grid.shape, dtype=bool)
    seen[center] = True
    queue = deque([center])
    while queue:
        row, col = queue.popleft()
        for d_row in (-1, 0, 1):
            for d_col in (-1, 0, 1):
                r, c = row + d_row, col + d_col
                inside = 0 <= r < grid.shape[0] and 0 <= c < grid.shape[1]
                if inside and not seen[r, c] and grid[r, c] <= threshold:
                    seen[r, c] = True
                    queue.append((r, c))
    return seen.sum() / grid.size


def _bowl() -> np.ndarray:
    coords = np.arange(-10, 11) / 10.0
    xx, yy = np.meshgrid(coords, coords, indexing="ij")
    return xx**2 + 2 * yy**2


def _double_well() -> tuple[np.ndarray, np.ndarray]:
    # f = (x^2 - 1)^2 + 0.3 x^3 + y^2: the right well is shallower and the saddle between
    # the wells is the grid point (0, 0) with value 1.
    x = np.arange(-20, 21) / 10.0
    y = np.arange(-15, 16) / 10.0
    xx, yy = np.meshgrid(x, y, indexing="ij")
    return (xx**2 - 1) ** 2 + 0.3 * xx**3 + yy**2, xx


# ---------------------------------------------------------------------------------------
# Basin profile
# ---------------------------------------------------------------------------------------


def test_basin_profile_bowl_monotone_to_one():
    grid = _bowl()
    center = (10, 10)
    top = grid.max() - grid[center]
    levels = np.linspace(0.0, top, 41)

    areas = basin_profile(grid, center, levels)

    assert areas.shape == (41,)
    assert areas[0] == 1 / grid.size
    assert np.all(np.diff(areas) >= 0)
    assert np.count_nonzero(np.diff(areas) > 0) > 20
    assert areas[-1] == 1.0
    for delta, area in zip(levels, areas, strict=True):
        assert area == reference_basin_area(grid, center, delta)


def test_basin_profile_double_well_jumps_at_saddle():
    grid, xx = _double_well()
    right = np.where(xx > 0, grid, np.inf)
    center = np.unravel_index(np.argmin(right), grid.shape)
    base = grid[center]
    below, above = (1.0 - base) * (1 - 1e-9), (1.0 - base) * (1 + 1e-9)

    areas = basin_profile(grid, center, [below, above])

    # Below the saddle value 1 the basin is the right well's part of the sublevel set.
    # Above it, the left well has joined and the basin is the whole sublevel set.
    assert areas[0] == np.count_nonzero((grid <= base + below) & (xx > 0)) / grid.size
    assert areas[1] == np.count_nonzero(grid <= base + above) / grid.size
    assert areas[0] < 0.5
    assert areas[1] > 2 * areas[0]


def test_basin_profile_nonfinite_cells_never_join():
    grid = np.array([[0.0, math.nan, 0.0], [0.0, math.inf, 0.0], [0.0, math.nan, 0.0]])

    areas = basin_profile(grid, (1, 0), [0.0, 1e300])

    assert areas.tolist() == [3 / 9, 3 / 9]


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    grid=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
        elements=st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, -1.0]),
    ),
)
def test_basin_profile_matches_flood_fill(data, grid):
    row = data.draw(st.integers(0, grid.shape[0] - 1), label="row")
    col = data.draw(st.integers(0, grid.shape[1] - 1), label="col")
    levels = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]), max_size=5))

    areas = basin_profile(grid, (row, col), levels)

    expected = [reference_basin_area(grid, (row, col), delta) for delta in levels]
    assert areas.tolist() == expected


@pytest.mark.parametrize(
    ("center", "levels", "pattern"),
    [
        pytest.param(
            (3, 0), [0.1], r"center \(3, 0\) lies outside the grid of shape \(3, 3\)", id="row"
        ),
        pytest.param((0, -1), [0.1], r"center \(0, -1\) lies outside", id="negative-col"),
        pytest.param((1, 1), [0.1], r"value at center \(1, 1\) is nan", id="nan-center"),
        pytest.param((0, 0), [0.1, -0.5], r"basin levels must be >= 0, but got -0.5", id="level"),
    ],
)
def test_basin_profile_bad_input_raises(center, levels, pattern):
    grid = np.zeros((3, 3))
    grid[1, 1] = math.nan

    with pytest.raises(topselect.InvalidInputError, match=pattern):
        basin_profile(grid, center, levels)


# ---------------------------------------------------------------------------------------
# Scores read off the diagrams
# ---------------------------------------------------------------------------------------

# A loop of 1s around a hump of 4 (H1 bar (1, 4)), cut off by a wall of 6s from a
# column whose minimum 0 is the global one (H0 bars (0, inf) and (1, 6)).
_LOOP_AND_WALL = np.array(
    [
        [1, 1, 1, 6, 0],
        [1, 4, 1, 6, 2],
        [1, 1, 1, 6, 3],
    ],
    dtype=np.float64,
)


def test_total_persistence_hand_computed():
    diagrams = topselect.sublevel_persistence(_LOOP_AND_WALL)

    assert total_persistence(diagrams, 0) == 5.0
    assert total_persistence(diagrams, 1) == 3.0


def test_total_persistence_empty_dimension_zero():
    diagrams = topselect.sublevel_persistence([[0.0, 1.0, 2.0]])

    assert total_persistence(diagrams, 0) == 0.0
    assert total_persistence(diagrams, 1) == 0.0


@pytest.mark.parametrize(
    ("grid", "dim", "expected"),
    [
        pytest.param(
            [[0, 3, 1, 5, 2]], 0, -(0.4 * math.log(0.4) + 0.6 * math.log(0.6)), id="2-bars"
        ),
        pytest.param([[0, 3, 1, 3, 1]], 0, math.log(2), id="equal-bars"),
        pytest.param([[0, 3, 1]], 0, 0.0, id="one-bar"),
        pytest.param([[0, 1, 2]], 0, 0.0, id="no-finite-bar"),
        pytest.param(_LOOP_AND_WALL, 1, 0.0, id="one-loop"),
    ],
)
def test_persistence_entropy_hand_computed(grid, dim, expected):
    diagrams = topselect.sublevel_persistence(grid)

    assert persistence_entropy(diagrams, dim) == pytest.approx(expected, abs=1e-12)


def test_flatness_scores_hand_computed():
    diagrams = topselect.sublevel_persistence(_LOOP_AND_WALL)

    scores = flatness_scores(_LOOP_AND_WALL, diagrams, (1, 1), levels=(1.0, 3.0))

    assert scores == {
        "center_loss": 4.0,
        "loss_range": 6.0,
        "n_nonfinite": 0.0,
        "tp_h0": 5.0,
        "tp_h0_norm": 5.0 / 6.0,
        "entropy_h0": 0.0,
        "n_bars_h0": 1.0,
        "tp_h1": 3.0,
        "tp_h1_norm": 0.5,
        "entropy_h1": 0.0,
        "n_bars_h1": 1.0,
        # The sublevel sets at 4 and 5 contain the hump and its loop (9 cells), and the
        # wall of 6s keeps the right column out. The one at 7 contains every cell.
        "basin_area_1": 9 / 15,
        "basin_area_3": 1.0,
        # Trapezoid rule over A(0) = A(1) = 9/15 and A(3) = 1, divided by 3.
        "basin_integral": (9 / 15 + (9 / 15 + 1.0)) / 3,
    }


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        # Areas 1/4, 2/4, 3/4, 1 at delta 0, 1, 2, 3: the mean over [0, 3] is 0.625.
        pytest.param((1.0, 2.0, 3.0), 0.625, id="zero-added"),
        pytest.param((0.0, 1.0, 2.0, 3.0), 0.625, id="zero-given"),
        pytest.param((3.0, 1.0, 2.0), 0.625, id="unsorted"),
        pytest.param((0.0,), 0.25, id="only-zero"),
    ],
)
def test_flatness_scores_basin_integral(levels, expected):
    grid = np.array([[0.0, 1.0, 2.0, 3.0]])
    diagrams = topselect.sublevel_persistence(grid)

    scores = flatness_scores(grid, diagrams, (0, 0), levels=levels)

    assert scores["basin_integral"] == pytest.approx(expected, abs=1e-12)


def test_flatness_scores_plain_floats():
    grid = _bowl()
    grid[0, 0] = math.nan
    diagrams = topselect.sublevel_persistence(grid)

    scores = flatness_scores(grid, diagrams, (10, 10))

    for key, value in scores.items():
        assert type(value) is float, f"{key} is {type(value).__name__}"
        assert math.isfinite(value), f"{key} is {value}"
    assert scores["n_nonfinite"] == 1.0
    assert scores["loss_range"] == np.nanmax(grid) - np.nanmin(grid)
    expected_keys = {basin_key(delta) for delta in topselect.topology.DEFAULT_BASIN_LEVELS}
    assert expected_keys <= scores.keys()


def test_flatness_scores_constant_grid_zero_range():
    grid = np.full((3, 3), 2.0)
    diagrams = topselect.sublevel_persistence(grid)

    scores = flatness_scores(grid, diagrams, (1, 1), levels=(0.1,))

    assert scores["loss_range"] == 0.0
    assert scores["tp_h0_norm"] == 0.0
    assert scores["tp_h1_norm"] == 0.0
    assert scores["basin_area_0.1"] == 1.0
    assert scores["basin_integral"] == 1.0


@pytest.mark.parametrize(
    ("delta", "key"),
    [
        (0.1, "basin_area_0.1"),
        (1.0, "basin_area_1"),
        (0.03, "basin_area_0.03"),
        (1e-5, "basin_area_1e-05"),
    ],
)
def test_basin_key_format(delta, key):
    assert basin_key(delta) == key
