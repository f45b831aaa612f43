"""Tests of diagram distances.

The distances are checked against persim 0.4.1 on finite diagrams and against two
references written here, which treat essential bars as ordinary points of the matching:

- Every point of either diagram is a row or a column of the usual diagonal-augmented
  cost matrix. Two essential points cost ``|birth_a - birth_b|``. An essential point
  costs ``inf`` against a finite point or the diagonal.
- The exhaustive reference tries every permutation of that matrix (diagrams of at most
  six points in all). The assignment reference solves it with
  ``scipy.optimize.linear_sum_assignment`` for Wasserstein, and for bottleneck finds the
  smallest threshold below which a perfect matching exists.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from topselect.exceptions import InvalidInputError
from topselect.topology import (
    diagram_distance,
    diagram_distance_matrix,
)

METRICS = ("bottleneck", "wasserstein", "sliced")
LOGGER_NAME = "topselect.topology._distances"
EMPTY = np.empty((0, 2))

# ---------------------------------------------------------------------------------------
# Diagram strategies and references
# ---------------------------------------------------------------------------------------

# Quarter steps make ties between costs common, which is where matchings go wrong.
_COORDINATES = st.integers(-12, 12).map(lambda v: v / 4)
_LENGTHS = st.integers(0, 12).map(lambda v: v / 4)


@st.composite
def _diagrams(draw: st.DrawFn, max_finite: int = 3, max_essential: int = 1) -> np.ndarray:
    finite = draw(st.lists(st.tuples(_COORDINATES, _LENGTHS), max_size=max_finite))
    essential = draw(st.lists(_COORDINATES, max_size=max_essential))
    rows = [(birth, birth + length) for birth, length in finite]
    rows += [(birth, math.inf) for birth in essential]
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


@st.composite
def _same_essential_pairs(
    draw: st.DrawFn, max_finite: int = 3, max_essential: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Draw two diagrams with the same number of essential bars."""
    n_essential = draw(st.integers(0, max_essential))
    pair = []
    for _ in range(2):
        diagram = draw(_diagrams(max_finite=max_finite, max_essential=0))
        births = draw(st.lists(_COORDINATES, min_size=n_essential, max_size=n_essential))
        essential = np.array([(birth, math.inf) for birth in births]).reshape(-1, 2)
        pair.append(np.concatenate([diagram, essential]))
    return pair[0], pair[1]


def _random_finite(rng: np.random.Generator, n_points: int, low: float = 0.0) -> np.ndarray:
    births = rng.uniform(low, 1.0, n_points)
    return np.column_stack([births, births + rng.exponential(0.3, n_points)])


def _point_cost(a: np.ndarray, b: np.ndarray, ground: str) -> float:
    a_essential, b_essential = math.isinf(a[1]), math.isinf(b[1])
    if a_essential and b_essential:
        return abs(a[0] - b[0])
    if a_essential or b_essential:
        return math.inf
    if ground == "linf":
        return max(abs(a[0] - b[0]), abs(a[1] - b[1]))
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _diagonal_cost(point: np.ndarray, ground: str) -> float:
    if math.isinf(point[1]):
        return math.inf
    length = point[1] - point[0]
    return length / 2 if ground == "linf" else length / math.sqrt(2)


def _augmented_costs(a: np.ndarray, b: np.ndarray, ground: str) -> np.ndarray:
    """Return the (m + n) x (m + n) cost matrix of all points of ``a`` and ``b``."""
    m, n = len(a), len(b)
    costs = np.full((m + n, m + n), math.inf)
    costs[m:, n:] = 0.0
    for i in range(m):
        for j in range(n):
            costs[i, j] = _point_cost(a[i], b[j], ground)
        costs[i, n + i] = _diagonal_cost(a[i], ground)
    for j in range(n):
        costs[m + j, j] = _diagonal_cost(b[j], ground)
    return costs


@functools.cache
def _permutations(size: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(size))), dtype=np.intp).reshape(-1, size)


def _exhaustive_distance(a: np.ndarray, b: np.ndarray, metric: str, order: float) -> float:
    ground = "linf" if metric == "bottleneck" else "l2"
    costs = _augmented_costs(a, b, ground)
    size = len(costs)
    if size == 0:
        return 0.0
    matched = costs[np.arange(size), _permutations(size)]  # Shape (size!, size).
    if metric == "bottleneck":
        return float(matched.max(axis=1).min())
    return float((matched**order).sum(axis=1).min() ** (1 / order))


def _assignment_wasserstein(a: np.ndarray, b: np.ndarray, order: float) -> float:
    costs = _augmented_costs(a, b, "l2") ** order
    return _assignment_total(costs) ** (1 / order)


def _assignment_total(costs: np.ndarray) -> float:
    """Return the minimum total cost of a perfect matching that avoids ``inf`` entries."""
    rows, cols = linear_sum_assignment(costs)
    return float(costs[rows, cols].sum())


def _assignment_bottleneck(a: np.ndarray, b: np.ndarray) -> float:
    """Return the smallest cost t such that a perfect matching uses only costs <= t."""
    costs = _augmented_costs(a, b, "linf")
    if len(costs) == 0:
        return 0.0
    for threshold in np.unique(costs):
        blocked = (costs > threshold).astype(float)
        if _assignment_total(blocked) == 0.0:
            return float(threshold)
    return math.inf


# ---------------------------------------------------------------------------------------
# Distances: metric properties and references
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(a=_diagrams(), b=_diagrams())
def test_distance_is_symmetric(metric: str, a: np.ndarray, b: np.ndarray) -> None:
    forward = diagram_distance(a, b, metric)
    backward = diagram_distance(b, a, metric)
    assert forward == pytest.approx(backward, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("metric", METRICS)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(a=_diagrams(max_finite=5, max_essential=2))
def test_distance_zero_on_identical_input(metric: str, a: np.ndarray) -> None:
    assert diagram_distance(a, a.copy(), metric) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("metric", "order"),
    [("bottleneck", 1.0), ("wasserstein", 1.0), ("wasserstein", 2.0), ("sliced", 1.0)],
)
@settings(max_examples=80, deadline=None, derandomize=True)
@given(diagrams=st.lists(_diagrams(max_finite=4, max_essential=0), min_size=3, max_size=3))
def test_distance_triangle_inequality(
    metric: str, order: float, diagrams: list[np.ndarray]
) -> None:
    a, b, c = diagrams
    ab = diagram_distance(a, b, metric, order=order)
    bc = diagram_distance(b, c, metric, order=order)
    ac = diagram_distance(a, c, metric, order=order)
    assert ac <= ab + bc + 1e-9


@settings(max_examples=60, deadline=None, derandomize=True)
@given(pair=_same_essential_pairs(max_finite=4, max_essential=2))
def test_distance_triangle_with_essential_bars(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, c = pair
    b = np.concatenate([a[np.isfinite(a[:, 1])][:1], c[np.isinf(c[:, 1])]])
    for metric in METRICS:
        ab = diagram_distance(a, b, metric)
        bc = diagram_distance(b, c, metric)
        ac = diagram_distance(a, c, metric)
        assert ac <= ab + bc + 1e-9, metric


@pytest.mark.parametrize("n_points", [1, 7, 40])
def test_distance_matches_persim_on_finite(n_points: int) -> None:
    import persim

    rng = np.random.default_rng(n_points)
    a, b = _random_finite(rng, n_points), _random_finite(rng, n_points + 3)
    bottleneck = diagram_distance(a, b, "bottleneck")
    wasserstein = diagram_distance(a, b, "wasserstein")
    sliced = diagram_distance(a, b, "sliced", seed=None, n_directions=30)
    assert bottleneck == pytest.approx(persim.bottleneck(a, b), rel=1e-12)
    assert wasserstein == pytest.approx(persim.wasserstein(a, b), rel=1e-9)
    # persim rounds the direction vectors to float32.
    assert sliced == pytest.approx(persim.sliced_wasserstein(a, b, M=30), rel=1e-6)


def test_sliced_differs_from_persim_below_zero() -> None:
    """persim 0.4.1 projects (b, d) onto the diagonal at |b + d| / 2, not (b + d) / 2."""
    import persim

    a = np.array([[-5.0, -1.0]])
    b = np.array([[-3.0, -2.9]])
    shift = 10.0
    ours = diagram_distance(a, b, "sliced", seed=None)
    ours_shifted = diagram_distance(a + shift, b + shift, "sliced", seed=None)
    persim_shifted = persim.sliced_wasserstein(a + shift, b + shift)
    assert ours == pytest.approx(ours_shifted, rel=1e-12)
    assert ours_shifted == pytest.approx(persim_shifted, rel=1e-6)
    assert persim.sliced_wasserstein(a, b) != pytest.approx(ours, rel=1e-3)


@pytest.mark.parametrize(
    ("metric", "order"),
    [("bottleneck", 1.0), ("wasserstein", 1.0), ("wasserstein", 2.0), ("wasserstein", 3.5)],
)
@settings(max_examples=80, deadline=None, derandomize=True)
@given(pair=_same_essential_pairs(max_finite=2, max_essential=1))
def test_distance_matches_exhaustive_matching(
    metric: str, order: float, pair: tuple[np.ndarray, np.ndarray]
) -> None:
    a, b = pair
    expected = _exhaustive_distance(a, b, metric, order)
    actual = diagram_distance(a, b, metric, order=order)
    assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("order", [1.0, 2.0])
@settings(max_examples=50, deadline=None, derandomize=True)
@given(pair=_same_essential_pairs(max_finite=6, max_essential=3))
def test_wasserstein_matches_assignment_reference(
    order: float, pair: tuple[np.ndarray, np.ndarray]
) -> None:
    a, b = pair
    expected = _assignment_wasserstein(a, b, order)
    actual = diagram_distance(a, b, "wasserstein", order=order)
    assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(pair=_same_essential_pairs(max_finite=6, max_essential=3))
def test_bottleneck_matches_threshold_reference(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    assert diagram_distance(a, b, "bottleneck") == pytest.approx(
        _assignment_bottleneck(a, b), rel=1e-12, abs=1e-12
    )


# ---------------------------------------------------------------------------------------
# Distances: essential bars and empty diagrams
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_distance_inf_for_different_essential_counts(metric: str) -> None:
    a = np.array([[0.0, math.inf], [0.5, 1.0]])
    b = np.array([[0.0, math.inf], [0.1, math.inf], [0.5, 1.0]])
    assert diagram_distance(a, b, metric) == math.inf
    assert diagram_distance(a, EMPTY, metric) == math.inf
    assert diagram_distance(a[1:], b[:1], metric) == math.inf


@pytest.mark.parametrize(
    ("metric", "order", "expected"),
    [
        ("bottleneck", 1.0, 2.0),
        ("wasserstein", 1.0, 2.5),
        ("wasserstein", 2.0, math.sqrt(0.5**2 + 2.0**2)),
        ("sliced", 1.0, 2.5),
    ],
)
def test_distance_pairs_essential_bars_by_birth(
    metric: str, order: float, expected: float
) -> None:
    # Sorted births pair 0 with 0.5 and 1 with 3: costs 0.5 and 2.
    a = np.array([[1.0, math.inf], [0.0, math.inf]])
    b = np.array([[3.0, math.inf], [0.5, math.inf]])
    assert diagram_distance(a, b, metric, order=order) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("empty", [[], EMPTY, np.empty(0)])
def test_distance_zero_between_empty_diagrams(metric: str, empty: object) -> None:
    assert diagram_distance(empty, EMPTY, metric) == 0.0


@pytest.mark.parametrize(
    ("metric", "order", "expected"),
    [
        ("bottleneck", 1.0, 2.0),
        ("wasserstein", 1.0, (4.0 + 1.0) / math.sqrt(2)),
        ("wasserstein", 2.0, math.sqrt((16.0 + 1.0) / 2)),
    ],
)
def test_distance_empty_sends_points_to_diagonal(
    metric: str, order: float, expected: float
) -> None:
    diagram = np.array([[0.0, 4.0], [1.0, 2.0]])
    assert diagram_distance(diagram, EMPTY, metric, order=order) == pytest.approx(expected)
    assert diagram_distance([], diagram, metric, order=order) == pytest.approx(expected)


def test_sliced_empty_single_point_closed_form() -> None:
    # A point at distance L = d - b above the diagonal projects, against its diagonal
    # projection, to |sin(theta) - cos(theta)| * L / 2. Its mean over theta is
    # sqrt(2) * L / pi.
    diagram = np.array([[1.0, 3.0]])
    expected = math.sqrt(2) * 2.0 / math.pi
    actual = diagram_distance(diagram, EMPTY, "sliced", n_directions=2000)
    assert actual == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("seed", [None, 0, 7])
def test_sliced_seed_is_deterministic(seed: int | None) -> None:
    rng = np.random.default_rng(3)
    a, b = _random_finite(rng, 20), _random_finite(rng, 25)
    first = diagram_distance(a, b, "sliced", seed=seed, n_directions=5)
    second = diagram_distance(a, b, "sliced", seed=seed, n_directions=5)
    assert first == second


def test_sliced_seed_shifts_directions() -> None:
    rng = np.random.default_rng(4)
    a, b = _random_finite(rng, 20), _random_finite(rng, 25)
    by_seed = {
        seed: diagram_distance(a, b, "sliced", seed=seed, n_directions=3) for seed in (0, 1)
    }
    assert by_seed[0] != by_seed[1]
    many_0 = diagram_distance(a, b, "sliced", seed=0, n_directions=2000)
    many_1 = diagram_distance(a, b, "sliced", seed=1, n_directions=2000)
    assert many_0 == pytest.approx(many_1, rel=1e-3)


# ---------------------------------------------------------------------------------------
# Distances: large diagrams
# ---------------------------------------------------------------------------------------


def test_distance_truncates_large_diagrams(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(2000)
    a, b = _random_finite(rng, 2000), _random_finite(rng, 2000)
    a = np.concatenate([a, [[0.0, math.inf]]])
    b = np.concatenate([b, [[0.1, math.inf]]])

    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        start = time.perf_counter()
        truncated = diagram_distance(a, b, "bottleneck")
        elapsed = time.perf_counter() - start

    # About 0.3 to 0.6 s on an AMD EPYC server. persim's exact bottleneck already took
    # 1.2 s at 1,000 points per diagram there and grows faster than the square of the
    # size, so this bound fails only if the fast path is not taken.
    assert elapsed < 5.0
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "Dropped the 3000 shortest finite bars from 2 of 2 diagrams" in message
    lengths_a = np.sort(a[:-1, 1] - a[:-1, 0])
    lengths_b = np.sort(b[:-1, 1] - b[:-1, 0])
    largest_dropped = max(lengths_a[-501], lengths_b[-501])
    assert f"largest dropped persistence is {largest_dropped:.6g}" in message

    kept_a = np.concatenate([_longest(a[:-1], 500), a[-1:]])
    kept_b = np.concatenate([_longest(b[:-1], 500), b[-1:]])
    assert truncated == diagram_distance(kept_a, kept_b, "bottleneck", max_points=None)


def _longest(bars: np.ndarray, count: int) -> np.ndarray:
    return bars[np.argsort(bars[:, 1] - bars[:, 0])[-count:]]


def test_sliced_uses_all_points_of_large_diagrams(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(2001)
    a, b = _random_finite(rng, 2000), _random_finite(rng, 2000)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        start = time.perf_counter()
        distance = diagram_distance(a, b, "sliced")
        elapsed = time.perf_counter() - start
    # About 0.02 s on an AMD EPYC server.
    assert elapsed < 2.0
    assert caplog.records == []
    assert distance != diagram_distance(_longest(a, 500), _longest(b, 500), "sliced")


@pytest.mark.parametrize(("metric", "order"), [("bottleneck", 1.0), ("wasserstein", 2.0)])
def test_distance_truncation_stays_within_bound(
    metric: str, order: float, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(60)
    a, b = _random_finite(rng, 60), _random_finite(rng, 50)
    exact = diagram_distance(a, b, metric, order=order, max_points=None)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        truncated = diagram_distance(a, b, metric, order=order, max_points=20)

    # Distance of each truncated diagram from its original: its dropped bars against
    # the empty diagram.
    shifts = [
        diagram_distance(_shortest(d, len(d) - 20), EMPTY, metric, order=order) for d in (a, b)
    ]
    bound = 2 * max(shifts)
    assert f"each distance changes by at most {bound:.6g}" in caplog.records[0].getMessage()
    assert abs(exact - truncated) <= bound + 1e-9


def _shortest(bars: np.ndarray, count: int) -> np.ndarray:
    return bars[np.argsort(bars[:, 1] - bars[:, 0])[:count]]


# ---------------------------------------------------------------------------------------
# Distances: the matrix
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_distance_matrix_matches_pairwise(metric: str) -> None:
    rng = np.random.default_rng(5)
    diagrams = [
        np.concatenate([_random_finite(rng, 6), [[0.0, math.inf]]]),
        np.concatenate([_random_finite(rng, 3), [[0.2, math.inf]]]),
        EMPTY,
        [],
        _random_finite(rng, 4),
    ]
    matrix = diagram_distance_matrix(diagrams, metric)
    assert matrix.shape == (5, 5)
    assert np.array_equal(matrix, matrix.T)
    assert np.all(np.diag(matrix) == 0.0)
    for i, j in itertools.combinations(range(5), 2):
        assert matrix[i, j] == pytest.approx(diagram_distance(diagrams[i], diagrams[j], metric))
    assert matrix[0, 2] == math.inf
    assert matrix[2, 3] == 0.0


def test_distance_matrix_handles_zero_and_one() -> None:
    assert diagram_distance_matrix([]).shape == (0, 0)
    assert np.array_equal(diagram_distance_matrix([[[0.0, 1.0]]]), np.zeros((1, 1)))


def test_distance_matrix_logs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(6)
    diagrams = [_random_finite(rng, 30) for _ in range(4)]
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        matrix = diagram_distance_matrix(diagrams, "wasserstein", max_points=10)
    assert len(caplog.records) == 1
    assert (
        "Dropped the 80 shortest finite bars from 4 of 4 diagrams"
        in caplog.records[0].getMessage()
    )
    expected = diagram_distance(
        _longest(diagrams[0], 10), _longest(diagrams[1], 10), "wasserstein"
    )
    assert matrix[0, 1] == pytest.approx(expected)


def test_distance_matrix_rejects_single_array() -> None:
    with pytest.raises(InvalidInputError, match=r"one array of shape \(3, 2\)"):
        diagram_distance_matrix(np.zeros((3, 2)))


def test_distance_matrix_names_bad_diagram() -> None:
    with pytest.raises(InvalidInputError, match=r"diagrams\[1\] must have death >= birth"):
        diagram_distance_matrix([[[0.0, 1.0]], [[2.0, 1.0]]])


# ---------------------------------------------------------------------------------------
# Distances: invalid input
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("diagram", "message"),
    [
        ([0.0, 1.0], r"a must have shape \(k, 2\).*got shape \(2,\)"),
        (np.zeros((2, 3)), r"a must have shape \(k, 2\).*got shape \(2, 3\)"),
        (np.zeros((2, 2, 2)), r"a must have shape \(k, 2\).*got shape \(2, 2, 2\)"),
        ([[0.0, 1.0], [0.0, math.nan]], r"a contains NaN in 1 rows, the first being row 1"),
        ([[math.inf, math.inf]], r"a must have finite births, but row 0 is \[inf, inf\]"),
        ([[-math.inf, 1.0]], r"a must have finite births, but row 0 is \[-inf, 1.0\]"),
        ([[0.0, 1.0], [2.0, 1.0]], r"a must have death >= birth.*row 1 is \[2.0, 1.0\]"),
        ([[0.0, -math.inf]], r"a must have death >= birth.*row 0 is \[0.0, -inf\]"),
        ([["x", "y"]], r"a must be an array of \(birth, death\) pairs.*float64 failed"),
    ],
)
def test_distance_rejects_bad_diagram(diagram: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        diagram_distance(diagram, EMPTY)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"metric": "euclidean"}, r"metric must be one of 'bottleneck'.*got 'euclidean'"),
        ({"metric": "wasserstein", "order": 0.5}, r"order must be a finite number >= 1.*0\.5"),
        ({"metric": "wasserstein", "order": math.inf}, r"order must be.*got inf"),
        ({"metric": "wasserstein", "order": "2"}, r"order must be.*got '2'"),
        ({"metric": "bottleneck", "order": 2.0}, r"order=2\.0 applies only to.*'bottleneck'"),
        ({"metric": "sliced", "n_directions": 0}, r"n_directions must be an integer >= 1"),
        ({"metric": "sliced", "n_directions": 2.5}, r"n_directions must be.*got 2\.5"),
        ({"metric": "sliced", "seed": -1}, r"seed must be an integer >= 0, but got -1"),
        ({"max_points": 0}, r"max_points must be an integer >= 1, but got 0"),
        ({"max_points": True}, r"max_points must be an integer >= 1, but got True"),
    ],
)
def test_distance_rejects_bad_options(options: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        diagram_distance([[0.0, 1.0]], [[0.0, 2.0]], **options)


def test_import_does_not_load_persim() -> None:
    code = "import sys, topselect.topology; print('persim' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
