"""Tests of sublevel persistence on 2-D grids against values derived by hand and two
independent reference computations written here.

Reference facts the tests rely on:

- The filtration is the clique complex of the 8-connected (king) grid graph, each simplex
  entering at the largest value of its cells. Its sublevel sets are homotopy equivalent to
  the union of the cells' closed unit squares (nerve theorem: pairwise king-adjacent
  cells lie in one 2 x 2 block and share its centre point).
- H0 is therefore 8-connected union-find with the elder rule.
- H1 follows from Alexander duality in the plane: the holes of the union of closed squares
  at level t are the 4-connected components of ``{f > t}`` that do not touch the grid's
  border. Duality reverses the filtration, so the H1 bars of ``f`` are the finite H0 bars
  of ``-f`` under 4-connectivity, negated and swapped, with a frame around the grid that
  is present from the start. A hole is born at the level where its region of
  ``{f > t}`` is cut off from the border, and it dies at the maximum of ``f`` over that
  region.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

import topselect
from topselect.exceptions import InvalidInputError
from topselect.topology import Diagrams, graph_sublevel_persistence
from topselect.topology import _persistence as persistence_module

KING = np.ones((3, 3), dtype=bool)
CROSS = ndimage.generate_binary_structure(2, 1)


# ---------------------------------------------------------------------------------------
# Independent reference computations
# ---------------------------------------------------------------------------------------


class _UnionFind:
    def __init__(self, births: list[float]) -> None:
        self.parent = list(range(len(births)))
        self.birth = list(births)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union_elder(self, i: int, j: int) -> float | None:
        """Merge the classes of i and j and return the birth of the class that dies, if any."""
        root_i, root_j = self.find(i), self.find(j)
        if root_i == root_j:
            return None
        if self.birth[root_i] > self.birth[root_j]:
            root_i, root_j = root_j, root_i
        self.parent[root_j] = root_i
        return self.birth[root_j]


def _neighbours(row: int, col: int, shape: tuple[int, int], offsets):
    for d_row, d_col in offsets:
        r, c = row + d_row, col + d_col
        if 0 <= r < shape[0] and 0 <= c < shape[1]:
            yield r, c


_KING_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
_CROSS_OFFSETS = [(-1, 0), (1, 0), (0, -1), (0, 1)]


def _sorted_bars(bars: list[tuple[float, float]]) -> np.ndarray:
    if not bars:
        return np.empty((0, 2))
    out = np.array(bars, dtype=np.float64).reshape(-1, 2)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def reference_h0(grid: np.ndarray) -> np.ndarray:
    """Return the H0 diagram of 8-connected sublevel persistence by union-find."""
    shape = grid.shape
    flat = grid.ravel()
    order = np.argsort(flat, kind="stable")
    forest = _UnionFind([float(v) for v in flat])
    added = np.zeros(flat.size, dtype=bool)
    bars: list[tuple[float, float]] = []
    for index in order:
        level = float(flat[index])
        added[index] = True
        row, col = divmod(int(index), shape[1])
        for r, c in _neighbours(row, col, shape, _KING_OFFSETS):
            other = r * shape[1] + c
            if not added[other]:
                continue
            dying_birth = forest.union_elder(int(index), other)
            if dying_birth is not None and level > dying_birth:
                bars.append((dying_birth, level))
    bars.append((float(flat.min()), math.inf))
    return _sorted_bars(bars)


def reference_h1(grid: np.ndarray) -> np.ndarray:
    """Return the H1 diagram of 8-connected sublevel persistence by duality.

    Runs 4-connected union-find on ``-grid`` with a frame node (birth ``-inf``) joined
    to every border cell, and turns each finite bar ``(b, d)`` into ``(-d, -b)``.
    """
    shape = grid.shape
    flat = -grid.ravel()
    frame = flat.size
    forest = _UnionFind([float(v) for v in flat] + [-math.inf])
    added = np.zeros(flat.size, dtype=bool)
    bars: list[tuple[float, float]] = []
    for index in np.argsort(flat, kind="stable"):
        level = float(flat[index])
        added[index] = True
        row, col = divmod(int(index), shape[1])
        others = [r * shape[1] + c for r, c in _neighbours(row, col, shape, _CROSS_OFFSETS)]
        others = [o for o in others if added[o]]
        if row in (0, shape[0] - 1) or col in (0, shape[1] - 1):
            others.append(frame)
        for other in others:
            dying_birth = forest.union_elder(int(index), other)
            if dying_birth is not None and level > dying_birth:
                bars.append((-level, -dying_birth))
    return _sorted_bars(bars)


def betti_numbers_at(diagrams: Diagrams, level: float) -> tuple[int, int]:
    """Return (b0, b1) of the sublevel set at ``level`` read off the diagrams."""
    b0 = int(np.sum((diagrams.h0[:, 0] <= level) & (level < diagrams.h0[:, 1])))
    b1 = int(np.sum((diagrams.h1[:, 0] <= level) & (level < diagrams.h1[:, 1])))
    return b0, b1


def euler_characteristic(present: np.ndarray) -> int:
    """Return V - E + T - Q of the king-graph clique complex on the ``present`` cells.

    Every clique lies in one 2 x 2 block: triangles are 3-subsets of a block and
    tetrahedra are full blocks, so each is counted once per block.
    """
    p = present.astype(np.int64)
    vertices = p.sum()
    edges = (
        (p[:, :-1] * p[:, 1:]).sum()
        + (p[:-1, :] * p[1:, :]).sum()
        + (p[:-1, :-1] * p[1:, 1:]).sum()
        + (p[:-1, 1:] * p[1:, :-1]).sum()
    )
    block = p[:-1, :-1] + p[:-1, 1:] + p[1:, :-1] + p[1:, 1:]
    triangles = (block * (block - 1) * (block - 2) // 6).sum()
    tetrahedra = (block == 4).sum()
    return int(vertices - edges + triangles - tetrahedra)


def bounded_holes(grid: np.ndarray, level: float) -> int:
    """Return the number of 4-connected components of ``grid > level`` off the border."""
    labels, count = ndimage.label(grid > level, structure=CROSS)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return count - len(set(border[border > 0].tolist()))


def assert_bars_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    """Compare two diagrams as multisets of bars, to 1e-9."""
    expected = np.asarray(expected, dtype=np.float64).reshape(-1, 2)
    assert actual.shape == expected.shape, f"bars {actual.tolist()} != {expected.tolist()}"
    actual = actual[np.lexsort((actual[:, 1], actual[:, 0]))]
    expected = expected[np.lexsort((expected[:, 1], expected[:, 0]))]
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------
# Grids with known diagrams
# ---------------------------------------------------------------------------------------


def _double_well() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # f = (x^2 - 1)^2 + c x^3 + y^2 with c = 0.3. The cubic tilt deepens the left well
    # (minimum near x = -1.1) and keeps the saddle at (0, 0) with value 1. On row y = 0,
    # f - 1 = x^2 (x^2 + c x - 2) < 0 for 0 < |x| <= 1.2, so that row joins both minima
    # to (0, 0) below 1. Every path between the wells meets the column x = 0, where
    # f = 1 + y^2 >= 1. A linear tilt would move the saddle off the grid point.
    x = np.arange(-20, 21) / 10.0
    y = np.arange(-15, 16) / 10.0
    xx, yy = np.meshgrid(x, y, indexing="ij")
    return (xx**2 - 1) ** 2 + 0.3 * xx**3 + yy**2, xx, yy


def test_persistence_double_well_two_bars():
    grid, xx, yy = _double_well()
    saddle = grid[(xx == 0) & (yy == 0)]
    assert saddle.tolist() == [1.0]

    diagrams = topselect.sublevel_persistence(grid)

    assert diagrams.h0.shape == (2, 2)
    essential = diagrams.h0[np.isinf(diagrams.h0[:, 1])]
    finite = diagrams.finite(0)
    assert essential.shape == (1, 2)
    assert finite.shape == (1, 2)
    assert essential[0, 0] == pytest.approx(grid[xx < 0].min(), abs=1e-9)
    assert essential[0, 0] == grid.min()
    assert finite[0, 0] == pytest.approx(grid[xx > 0].min(), abs=1e-9)
    assert finite[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert diagrams.h1.shape == (0, 2)


def test_persistence_ring_valley_one_loop():
    # f = (r - 1)^2 + 0.1 x: a ring-shaped valley, highest on its right side, around a
    # hump of value 1 at the centre. Every 8-connected loop around the centre meets the
    # centre row right of the centre, so the loop is born no lower than the minimum there.
    coords = np.arange(-15, 16) / 10.0
    xx, yy = np.meshgrid(coords, coords, indexing="ij")
    grid = (np.hypot(xx, yy) - 1) ** 2 + 0.1 * xx
    centre = (15, 15)
    ray = grid[16:, 15]
    expected_birth = ray.min()
    # At that level the centre's region of {f > t} is cut off from the border, so the
    # loop exists there already. The centre is the maximum inside the ring.
    labels, _ = ndimage.label(grid > expected_birth, structure=CROSS)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    assert labels[centre] not in border
    assert grid[centre] == 1.0
    assert grid[labels == labels[centre]].max() == 1.0

    diagrams = topselect.sublevel_persistence(grid)

    assert diagrams.h1.shape == (1, 2)
    birth, death = diagrams.h1[0]
    assert birth > grid.min()
    assert birth == pytest.approx(expected_birth, abs=1e-9)
    assert death == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(
    ("grid", "h0", "h1"),
    [
        pytest.param([[3.0]], [[3.0, math.inf]], [], id="one-cell"),
        pytest.param([[2.0, 2.0], [2.0, 2.0]], [[2.0, math.inf]], [], id="constant"),
        pytest.param([[0, 5], [5, 0]], [[0.0, math.inf]], [], id="diagonal-cells-connect"),
        pytest.param([[0, 3, 1, 5, 2]], [[0, math.inf], [1, 3], [2, 5]], [], id="one-row"),
        pytest.param([[2], [5], [1], [3], [0]], [[0, math.inf], [1, 3], [2, 5]], [], id="column"),
        pytest.param([[1, 1, 1], [1, 4, 1], [1, 1, 1]], [[1, math.inf]], [[1, 4]], id="ring"),
        pytest.param(
            [[9, 0, 9], [0, 5, 0], [9, 0, 9]], [[0, math.inf]], [[0, 5]], id="diagonal-loop"
        ),
        pytest.param(
            [[0, 0, 0, 0], [0, 5, 0, 0], [0, 0, 6, 0], [0, 0, 0, 0]],
            [[0, math.inf]],
            [[0, 5], [0, 6]],
            id="two-holes-touching-at-corner",
        ),
        pytest.param(
            [[1, 1, 1], [1, 4, 1], [1, 3, 1]], [[1, math.inf]], [[3, 4]], id="ring-closing-late"
        ),
        pytest.param([[-3.0, -1.0, -2.0]], [[-3, math.inf], [-2, -1]], [], id="negative"),
        pytest.param([[0.0, 2.0, 0.0]], [[0, math.inf], [0, 2]], [], id="zeros"),
    ],
)
def test_persistence_known_grids_exact(grid, h0, h1):
    diagrams = topselect.sublevel_persistence(np.asarray(grid, dtype=np.float64))

    assert_bars_equal(diagrams.h0, h0)
    assert_bars_equal(diagrams.h1, h1)


def test_persistence_result_arrays_float64():
    diagrams = topselect.sublevel_persistence([[1, 1, 1], [1, 4, 1], [1, 1, 1]])

    assert diagrams.h0.dtype == np.float64
    assert diagrams.h1.dtype == np.float64
    assert diagrams.h0.shape[1] == 2
    assert diagrams.h1.shape[1] == 2


# ---------------------------------------------------------------------------------------
# Property tests against the references
# ---------------------------------------------------------------------------------------

_SHAPES = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8)
_FLOATS = st.one_of(
    st.sampled_from([0.0, -1.0, 1.0, 1.0 + 1e-12, 2.5, -0.5]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
)
_GRIDS = st.one_of(
    hnp.arrays(np.int64, _SHAPES, elements=st.integers(min_value=-3, max_value=3)),
    hnp.arrays(np.float64, _SHAPES, elements=_FLOATS),
)


@settings(max_examples=300, deadline=None)
@given(grid=_GRIDS)
def test_persistence_h0_matches_union_find(grid):
    diagrams = topselect.sublevel_persistence(grid)

    assert_bars_equal(diagrams.h0, reference_h0(grid.astype(np.float64)))


@settings(max_examples=300, deadline=None)
@given(grid=_GRIDS)
def test_persistence_h1_matches_duality(grid):
    diagrams = topselect.sublevel_persistence(grid)

    assert_bars_equal(diagrams.h1, reference_h1(grid.astype(np.float64)))


@settings(max_examples=150, deadline=None)
@given(grid=_GRIDS)
def test_persistence_betti_numbers_every_level(grid):
    grid = grid.astype(np.float64)
    diagrams = topselect.sublevel_persistence(grid)

    for level in np.unique(grid):
        present = grid <= level
        b0, b1 = betti_numbers_at(diagrams, level)
        _, components = ndimage.label(present, structure=KING)
        assert b0 == components, f"b0 at level {level}"
        assert b1 == bounded_holes(grid, level), f"b1 at level {level}"
        assert b0 - b1 == euler_characteristic(present), f"Euler characteristic at {level}"


_SYMMETRIES = {
    "flip-rows": lambda g: np.flip(g, axis=0),
    "flip-cols": lambda g: np.flip(g, axis=1),
    "flip-both": np.flip,
    "transpose": np.transpose,
    "rot90": lambda g: np.rot90(g, 1),
    "rot180": lambda g: np.rot90(g, 2),
    "rot270": lambda g: np.rot90(g, 3),
}


@pytest.mark.parametrize("name", sorted(_SYMMETRIES))
@settings(max_examples=60, deadline=None)
@given(grid=_GRIDS)
def test_persistence_invariant_under_symmetry(name, grid):
    original = topselect.sublevel_persistence(grid)
    moved = topselect.sublevel_persistence(_SYMMETRIES[name](grid))

    np.testing.assert_array_equal(moved.h0, original.h0)
    np.testing.assert_array_equal(moved.h1, original.h1)


# ---------------------------------------------------------------------------------------
# Shortcuts: diagrams settled by the local extrema skip ripser
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def count_ripser_calls() -> Iterator[list[int]]:
    """Count calls of the module's ripser wrapper inside the block."""
    calls = [0]
    original = persistence_module._ripser_diagrams

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(persistence_module, "_ripser_diagrams", counting)
        yield calls


@settings(max_examples=300, deadline=None)
@given(grid=_GRIDS)
def test_persistence_shortcuts_equal_full_computation(grid):
    grid = grid.astype(np.float64)

    h0, h1 = persistence_module._grid_diagrams(grid)
    full_h0, full_h1 = persistence_module._grid_diagrams(grid, shortcuts=False)

    np.testing.assert_array_equal(h0, full_h0)
    np.testing.assert_array_equal(h1, full_h1)


_BOWLS = st.builds(
    lambda rows, cols, centre_row, centre_col, stretch, tilt: (
        (np.arange(rows)[:, None] - centre_row * (rows - 1)) ** 2
        + stretch * (np.arange(cols)[None, :] - centre_col * (cols - 1)) ** 2
        + tilt * np.arange(rows)[:, None]
    ),
    rows=st.integers(1, 31),
    cols=st.integers(1, 31),
    centre_row=st.floats(-0.5, 1.5),
    centre_col=st.floats(-0.5, 1.5),
    stretch=st.floats(0.01, 100.0),
    tilt=st.floats(-3.0, 3.0),
)


@settings(max_examples=200, deadline=None)
@given(grid=_BOWLS)
def test_persistence_single_basin_calls_no_ripser(grid):
    assume(persistence_module._lone_minimum(grid))

    with count_ripser_calls() as calls:
        diagrams = topselect.sublevel_persistence(grid)

    assert calls == [0]
    assert_bars_equal(diagrams.h0, reference_h0(grid))
    assert_bars_equal(diagrams.h1, reference_h1(grid))
    assert diagrams.h0.tolist() == [[grid.min(), math.inf]]


def test_persistence_shortcut_per_dimension():
    # The tilted ring valley has one minimum but a loop around its central hump: H0 is
    # settled without ripser, H1 is not.
    coords = np.arange(-15, 16) / 10.0
    xx, yy = np.meshgrid(coords, coords, indexing="ij")
    grid = (np.hypot(xx, yy) - 1) ** 2 + 0.1 * xx
    assert persistence_module._lone_minimum(grid)
    assert persistence_module._has_enclosed_peak(grid)

    with count_ripser_calls() as calls:
        diagrams = topselect.sublevel_persistence(grid)

    assert calls == [1]
    assert_bars_equal(diagrams.h0, reference_h0(grid))
    assert_bars_equal(diagrams.h1, reference_h1(grid))
    assert diagrams.h1.shape == (1, 2)


def test_persistence_plateau_minimum_uses_ripser():
    # Two equal minima side by side form one component, but only ripser can tell.
    grid = np.array([[3.0, 3.0, 3.0, 3.0], [3.0, 1.0, 1.0, 3.0], [3.0, 3.0, 3.0, 3.0]])
    assert not persistence_module._lone_minimum(grid)

    with count_ripser_calls() as calls:
        diagrams = topselect.sublevel_persistence(grid)

    assert calls == [1]
    assert diagrams.h0.tolist() == [[1.0, math.inf]]
    assert diagrams.h1.shape == (0, 2)


# ---------------------------------------------------------------------------------------
# Known traps: float32 collisions, non-finite values, odd shapes and types
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [1.0, 1e6, -1.0, 0.1, -1e6])
def test_persistence_float32_collisions_exact(base):
    step = max(abs(base), 1.0) * 1e-12
    low, mid, high = base, base + step, base + 3 * step
    assert np.float32(low) == np.float32(high)  # ripser alone could not tell them apart
    grid = np.array([[low, high, mid]])

    diagrams = topselect.sublevel_persistence(grid)

    assert diagrams.h0.tolist() == [[low, math.inf], [mid, high]]


def test_persistence_float32_collisions_loop_exact():
    ring, hump = 1.0 + 1e-12, 1.0 + 5e-12
    grid = np.full((3, 3), ring)
    grid[1, 1] = hump
    grid[0, 0] = 1.0

    diagrams = topselect.sublevel_persistence(grid)

    assert diagrams.h0.tolist() == [[1.0, math.inf]]
    assert diagrams.h1.tolist() == [[ring, hump]]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_persistence_nonfinite_replaced_and_counted(bad, caplog):
    grid = np.array([[0.0, bad, 1.0]])

    with caplog.at_level(logging.WARNING, logger="topselect.topology"):
        diagrams = topselect.sublevel_persistence(grid)

    # One level above every finite value: max + (max - min) = 2.
    assert diagrams.n_nonfinite == 1
    assert diagrams.fill_value == 2.0
    assert diagrams.value_range == (0.0, 1.0)
    assert diagrams.h0.tolist() == [[0.0, math.inf], [1.0, 2.0]]
    assert diagrams.h1.shape == (0, 2)
    assert "1 of 3 values were NaN or +inf" in caplog.text


def test_persistence_nonfinite_hole_dies_at_fill():
    grid = np.ones((3, 3))
    grid[1, 1] = math.nan
    grid[2, 2] = math.inf

    diagrams = topselect.sublevel_persistence(grid)

    # Constant finite values: the fill level is max + 1.
    assert diagrams.n_nonfinite == 2
    assert diagrams.fill_value == 2.0
    assert diagrams.h0.tolist() == [[1.0, math.inf]]
    assert diagrams.h1.tolist() == [[1.0, 2.0]]


@settings(max_examples=100, deadline=None)
@given(
    grid=hnp.arrays(
        np.float64,
        _SHAPES,
        elements=st.one_of(
            st.floats(min_value=-10, max_value=10), st.sampled_from([math.nan, math.inf])
        ),
    )
)
def test_persistence_nonfinite_diagrams_stay_finite(grid):
    n_bad = int(np.sum(~np.isfinite(grid)))
    if n_bad == grid.size:
        with pytest.raises(topselect.InvalidInputError, match="no finite entry"):
            topselect.sublevel_persistence(grid)
        return

    diagrams = topselect.sublevel_persistence(grid)

    assert diagrams.n_nonfinite == n_bad
    assert np.all(np.isfinite(diagrams.h0[:, 0]))
    assert int(np.sum(np.isinf(diagrams.h0[:, 1]))) == 1
    assert np.all(np.isfinite(diagrams.h1))
    filled = np.where(np.isfinite(grid), grid, diagrams.fill_value)
    if n_bad:
        assert diagrams.fill_value > np.max(grid[np.isfinite(grid)])
    assert_bars_equal(diagrams.h0, reference_h0(filled))
    assert_bars_equal(diagrams.h1, reference_h1(filled))


def test_persistence_negative_infinity_raises():
    with pytest.raises(topselect.InvalidInputError, match="-inf"):
        topselect.sublevel_persistence([[0.0, -math.inf], [1.0, 2.0]])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_persistence_all_nonfinite_raises(bad):
    with pytest.raises(topselect.InvalidInputError, match=r"no finite entry \(all 4"):
        topselect.sublevel_persistence(np.full((2, 2), bad))


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        pytest.param(np.zeros(3), r"2-D array, but got shape \(3,\)", id="1-D"),
        pytest.param(np.zeros((2, 2, 2)), r"2-D array, but got shape \(2, 2, 2\)", id="3-D"),
        pytest.param(np.float64(1.0), r"2-D array, but got shape \(\)", id="scalar"),
        pytest.param(np.zeros((0, 3)), r"must not be empty, but got shape \(0, 3\)", id="0-rows"),
        pytest.param(np.zeros((4, 0)), r"must not be empty, but got shape \(4, 0\)", id="0-cols"),
        pytest.param([["a", "b"]], "converting it failed", id="strings"),
    ],
)
def test_persistence_bad_input_raises(values, pattern):
    with pytest.raises(topselect.InvalidInputError, match=pattern):
        topselect.sublevel_persistence(values)


@pytest.mark.parametrize(
    "grid",
    [
        pytest.param(np.array([[3, 0, 2, 1]], dtype=np.int32), id="int32"),
        pytest.param(np.array([[3, 0, 2, 1]], dtype=np.uint8), id="uint8"),
        pytest.param([[3, 0, 2, 1]], id="list-of-ints"),
    ],
)
def test_persistence_integer_input(grid):
    diagrams = topselect.sublevel_persistence(grid)

    assert diagrams.h0.tolist() == [[0.0, math.inf], [1.0, 2.0]]


def test_persistence_boolean_input():
    diagrams = topselect.sublevel_persistence(np.array([[False, True, False]]))

    assert_bars_equal(diagrams.h0, [[0.0, math.inf], [0.0, 1.0]])
    assert diagrams.value_range == (0.0, 1.0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (1, 9), (9, 1), (2, 1)])
def test_persistence_thin_grids_match_reference(shape):
    rng = np.random.default_rng(7)
    grid = rng.integers(0, 4, size=shape).astype(np.float64)

    diagrams = topselect.sublevel_persistence(grid)

    assert_bars_equal(diagrams.h0, reference_h0(grid))
    assert diagrams.h1.shape == (0, 2)


def test_persistence_one_cell_essential_only():
    diagrams = topselect.sublevel_persistence([[-2.5]])

    assert diagrams.h0.tolist() == [[-2.5, math.inf]]
    assert diagrams.h1.shape == (0, 2)
    assert diagrams.value_range == (-2.5, -2.5)
    assert diagrams.n_nonfinite == 0
    assert diagrams.fill_value is None


def test_persistence_input_not_modified():
    grid = np.array([[0.0, math.nan, 1.0]])

    topselect.sublevel_persistence(grid)

    assert np.isnan(grid[0, 1])
    assert grid[0, 0] == 0.0


# ---------------------------------------------------------------------------------------
# Persistence on an arbitrary graph
# ---------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(grid=_GRIDS)
def test_graph_persistence_on_king_graph_equals_grid(grid):
    rows, cols = grid.shape
    index = np.arange(grid.size).reshape(grid.shape)
    edges = [
        (index[r, c], index[r + dr, c + dc])
        for r in range(rows)
        for c in range(cols)
        for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1))
        if 0 <= r + dr < rows and 0 <= c + dc < cols
    ]
    expected = topselect.sublevel_persistence(grid)

    actual = graph_sublevel_persistence(
        grid.ravel(), np.array(edges, dtype=np.intp).reshape(-1, 2)
    )

    assert_bars_equal(actual.h0, expected.h0)
    assert_bars_equal(actual.h1, expected.h1)


def test_graph_persistence_cycle_has_one_loop():
    # A 4-cycle without diagonals never fills in: its loop is essential, and ripser
    # reports it with an infinite death.
    values = np.array([0.0, 1.0, 2.0, 3.0])
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 0]])

    diagrams = graph_sublevel_persistence(values, edges)

    assert diagrams.h0.tolist() == [[0.0, np.inf]]
    assert diagrams.h1.tolist() == [[3.0, np.inf]]


def test_graph_persistence_max_dim_zero_skips_h1():
    values = np.array([0.0, 1.0, 2.0, 3.0])
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 0]])

    diagrams = graph_sublevel_persistence(values, edges, max_dim=0)

    assert diagrams.h1.shape == (0, 2)
    assert diagrams.h0.tolist() == [[0.0, np.inf]]


def test_graph_persistence_components_and_duplicates():
    values = np.array([0.0, 2.0, 1.0, 5.0])
    edges = np.array([[1, 0], [0, 1], [2, 2], [2, 3]])  # Duplicates and a self-loop.

    diagrams = graph_sublevel_persistence(values, edges)

    assert diagrams.h0.tolist() == [[0.0, np.inf], [1.0, np.inf]]


@pytest.mark.parametrize(
    ("values", "edges", "max_dim", "pattern"),
    [
        ([], [], 1, r"values must be a non-empty 1-D array"),
        (
            [[0.0, 1.0]],
            [[0, 1]],
            1,
            r"values must be a non-empty 1-D array, but got shape \(1, 2\)",
        ),
        ([0.0, 1.0], [[0, 2]], 1, r"edges name vertices from 0 to 2, outside \[0, 2\)"),
        ([0.0, 1.0], [[0.0, 1.0]], 1, r"edges must be an integer array of shape \(e, 2\)"),
        ([0.0, 1.0], [0, 1], 1, r"edges must be an integer array of shape \(e, 2\)"),
        ([0.0, -np.inf], [[0, 1]], 1, r"values contains -inf"),
        ([0.0, 1.0], [[0, 1]], 2, r"max_dim must be 0 or 1, but got 2"),
    ],
)
def test_graph_persistence_bad_input_raises(values, edges, max_dim, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        graph_sublevel_persistence(values, edges, max_dim=max_dim)
