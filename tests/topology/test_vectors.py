"""Tests of persistence images and persistence landscapes.

Images are checked against a direct closed-form Gaussian integral written here; landscapes
against hand-computed values and against sorted tent functions.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

from topselect.exceptions import InvalidInputError
from topselect.topology import PersistenceImage, persistence_image, persistence_landscape

LOGGER_NAME = "topselect.topology._vectors"
EMPTY = np.empty((0, 2))
# Quarter-integer coordinates keep hand-checked sums exact in floating point.
_COORDINATES = st.integers(-12, 12).map(lambda v: v / 4)
_LENGTHS = st.integers(0, 12).map(lambda v: v / 4)


@st.composite
def _diagrams(draw: st.DrawFn, max_finite: int = 3, max_essential: int = 1) -> np.ndarray:
    finite = draw(st.lists(st.tuples(_COORDINATES, _LENGTHS), max_size=max_finite))
    essential = draw(st.lists(_COORDINATES, max_size=max_essential))
    rows = [(birth, birth + length) for birth, length in finite]
    rows += [(birth, math.inf) for birth in essential]
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


# ---------------------------------------------------------------------------------------
# Persistence images
# ---------------------------------------------------------------------------------------


def _reference_image(
    diagram: np.ndarray,
    pixels: tuple[int, int],
    birth_range: tuple[float, float],
    persistence_range: tuple[float, float],
    sigma: float,
) -> np.ndarray:
    """Sum over finite bars of persistence times the Gaussian mass in each pixel."""
    finite = diagram[np.isfinite(diagram[:, 1])]
    births, lengths = finite[:, 0], finite[:, 1] - finite[:, 0]
    birth_edges = np.linspace(*birth_range, pixels[0] + 1)
    length_edges = np.linspace(*persistence_range, pixels[1] + 1)
    birth_mass = np.diff(ndtr((birth_edges[None, :] - births[:, None]) / sigma), axis=1)
    length_mass = np.diff(ndtr((length_edges[None, :] - lengths[:, None]) / sigma), axis=1)
    return (birth_mass * lengths[:, None]).T @ length_mass


def test_image_matches_direct_formula() -> None:
    diagram = np.array([[0.1, 0.9], [0.4, 0.6], [0.7, 1.5], [0.0, math.inf]])
    image = persistence_image(
        diagram, pixels=(7, 4), birth_range=(0.0, 1.0), persistence_range=(0.0, 1.2), sigma=0.1
    )
    expected = _reference_image(diagram, (7, 4), (0.0, 1.0), (0.0, 1.2), 0.1)
    assert isinstance(image, PersistenceImage)
    assert image.values.shape == (7, 4)
    np.testing.assert_allclose(image.values, expected, rtol=1e-9, atol=1e-15)
    assert image.n_essential == 1
    assert image.n_outside == 0


def test_image_mass_sums_to_total_persistence() -> None:
    diagram = np.array([[0.3, 0.8], [0.5, 0.7]])
    image = persistence_image(
        diagram, pixels=(40, 30), birth_range=(-1.0, 2.0), persistence_range=(-1.0, 2.0)
    )
    assert image.values.sum() == pytest.approx(0.5 + 0.2, rel=1e-6)


def test_image_ignores_essential_bars() -> None:
    finite = np.array([[0.0, 1.0], [0.5, 0.75]])
    with_essential = np.concatenate([finite, [[0.0, math.inf], [0.2, math.inf]]])
    image = persistence_image(with_essential)
    assert image.n_essential == 2
    np.testing.assert_array_equal(image.values, persistence_image(finite).values)


@pytest.mark.parametrize("diagram", [[], EMPTY, [[0.0, math.inf]]])
def test_image_zero_on_empty_diagram(diagram: object) -> None:
    image = persistence_image(diagram, pixels=(5, 3))
    assert image.values.shape == (5, 3)
    assert np.all(image.values == 0.0)
    assert image.birth_range == (0.0, 1.0)
    assert image.persistence_range == (0.0, 1.0)


def test_image_default_ranges_and_sigma() -> None:
    image = persistence_image([[1.0, 3.0], [2.0, 2.5]], pixels=(10, 4))
    assert image.birth_range == (1.0, 2.0)
    assert image.persistence_range == (0.0, 2.0)
    assert image.sigma == pytest.approx(0.5)
    assert image.values.shape == (10, 4)
    assert image.values.sum() > 0.0


def test_image_widens_single_birth_range() -> None:
    image = persistence_image([[1.0, 3.0], [1.0, 1.5]])
    assert image.birth_range == (0.0, 2.0)


def test_image_counts_points_outside(caplog: pytest.LogCaptureFixture) -> None:
    diagram = np.array([[0.5, 1.0], [3.0, 3.5], [0.2, 5.0]])
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        image = persistence_image(diagram, birth_range=(0.0, 1.0), persistence_range=(0.0, 1.0))
    assert image.n_outside == 2
    assert len(caplog.records) == 1
    assert "2 of 3 finite bars lie outside the persistence image" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pixels": (0, 5)}, r"pixels\[0\] must be an integer >= 1, but got 0"),
        ({"pixels": (5,)}, r"pixels must be a pair .* got \(5,\)"),
        ({"pixels": 5}, r"pixels must be a pair .* got 5"),
        ({"birth_range": (1.0, 1.0)}, r"birth_range must be a pair .*low < high.*\(1\.0, 1\.0\)"),
        ({"persistence_range": (0.0, math.inf)}, r"persistence_range must be a pair.*inf"),
        ({"sigma": 0.0}, r"sigma must be a finite number > 0, but got 0\.0"),
        ({"sigma": math.nan}, r"sigma must be a finite number > 0, but got nan"),
    ],
)
def test_image_rejects_bad_arguments(options: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        persistence_image([[0.0, 1.0]], **options)


def test_image_names_bad_diagram() -> None:
    with pytest.raises(InvalidInputError, match=r"diagram must have death >= birth"):
        persistence_image([[1.0, 0.0]])


# ---------------------------------------------------------------------------------------
# Persistence landscapes
# ---------------------------------------------------------------------------------------


def test_landscape_values_by_hand() -> None:
    # Tents of (0, 2) and (1, 3) on t = 0, 0.5, ..., 3. They cross at t = 1.5, height 0.5.
    diagram = np.array([[0.0, 2.0], [1.0, 3.0]])
    landscape = persistence_landscape(diagram, n_layers=3, resolution=7, value_range=(0.0, 3.0))
    expected = np.array(
        [
            [0.0, 0.5, 1.0, 0.5, 1.0, 0.5, 0.0],
            [0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    np.testing.assert_allclose(landscape, expected, atol=1e-15)


def test_landscape_single_bar_default_range() -> None:
    # The grid runs from the birth 1 to the death 5: t = 1, 2, 3, 4, 5.
    landscape = persistence_landscape([[1.0, 5.0]], n_layers=2, resolution=5)
    np.testing.assert_allclose(landscape[0], [0.0, 1.0, 2.0, 1.0, 0.0])
    np.testing.assert_array_equal(landscape[1], np.zeros(5))


def test_landscape_ignores_essential_bars() -> None:
    finite = np.array([[0.0, 2.0], [1.0, 3.0]])
    with_essential = np.concatenate([[[0.0, math.inf]], finite])
    np.testing.assert_array_equal(
        persistence_landscape(with_essential), persistence_landscape(finite)
    )


@pytest.mark.parametrize("diagram", [[], EMPTY, [[0.0, math.inf]]])
def test_landscape_zero_on_empty_diagram(diagram: object) -> None:
    landscape = persistence_landscape(diagram, n_layers=4, resolution=11)
    assert landscape.shape == (4, 11)
    assert np.all(landscape == 0.0)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(diagram=_diagrams(max_finite=8, max_essential=1))
def test_landscape_matches_sorted_tents(diagram: np.ndarray) -> None:
    value_range = (-3.0, 6.0)
    landscape = persistence_landscape(diagram, n_layers=4, resolution=37, value_range=value_range)
    assert landscape.shape == (4, 37)
    grid = np.linspace(*value_range, 37)
    finite = diagram[np.isfinite(diagram[:, 1])]
    for column, t in enumerate(grid):
        tents = sorted((max(0.0, min(t - b, d - t)) for b, d in finite), reverse=True)
        expected = (tents + [0.0] * 4)[:4]
        np.testing.assert_allclose(landscape[:, column], expected, atol=1e-12)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_layers": 0}, r"n_layers must be an integer >= 1, but got 0"),
        ({"resolution": 1}, r"resolution must be an integer >= 2, but got 1"),
        ({"resolution": 10.0}, r"resolution must be an integer >= 2, but got 10\.0"),
        ({"value_range": (2.0, 1.0)}, r"value_range must be a pair .*\(2\.0, 1\.0\)"),
        ({"value_range": (0.0, math.nan)}, r"value_range must be a pair .*nan"),
    ],
)
def test_landscape_rejects_bad_arguments(options: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        persistence_landscape([[0.0, 1.0]], **options)
