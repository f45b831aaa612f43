"""Persistence images and persistence landscapes of diagrams with essential bars.

A diagram here is one homology dimension: an array of shape ``(k, 2)`` of (birth, death)
pairs, such as ``Diagrams.h0``. Both vectorizations leave out bars with infinite death
and accept empty diagrams, where persim 0.4.1 raises.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from topselect.exceptions import IncompatibleVersionError, InvalidInputError
from topselect.topology._diagram_checks import as_diagram, check_count, is_real

__all__ = ["PersistenceImage", "persistence_image", "persistence_landscape"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersistenceImage:
    """A persistence image with the grid it was computed on.

    Images are comparable, entry by entry, only when they share ``birth_range``,
    ``persistence_range``, the pixel counts and ``sigma``.

    Attributes:
        values: Array of shape ``(n_birth_pixels, n_persistence_pixels)``. Entry
            ``[i, j]`` is the persistence-weighted Gaussian mass of the finite bars that
            falls in birth pixel ``i`` and persistence pixel ``j``, both counted from the
            lowest value. Its unit is that of the persistence, which is the weight,
            because the Gaussian masses themselves are probabilities.
        birth_range: (low, high) births covered by the image, in the diagram's units.
        persistence_range: (low, high) persistence (death minus birth) covered by the
            image, in the diagram's units.
        sigma: Standard deviation of the Gaussian kernel, in the diagram's units.
        n_essential: Number of bars with infinite death, which are not in the image.
        n_outside: Number of finite bars whose (birth, persistence) lies outside the
            image. Part of their mass, usually most of it, is missing from ``values``.
    """

    values: NDArray[np.float64]
    birth_range: tuple[float, float]
    persistence_range: tuple[float, float]
    sigma: float
    n_essential: int
    n_outside: int


def persistence_image(
    diagram: ArrayLike,
    *,
    pixels: tuple[int, int] = (20, 20),
    birth_range: tuple[float, float] | None = None,
    persistence_range: tuple[float, float] | None = None,
    sigma: float | None = None,
) -> PersistenceImage:
    """Compute the persistence image of a diagram (Adams et al., JMLR 18, 2017).

    Each finite bar becomes the point (birth, persistence), spread by an isotropic
    Gaussian of standard deviation ``sigma`` and weighted by its persistence, which
    persim calls the ``"persistence"`` weight with ``n=1``. The mass in each pixel is
    computed exactly from the Gaussian's distribution function by
    ``persim.PersistenceImager``. persim only supports square pixels, so the points are
    mapped to a grid of unit pixels first, with the kernel and weight scaled to match.

    Essential bars are left out, and their count is in the result. No diagram raises an
    error for being empty or having essential bars. An empty diagram, or one with only
    essential bars, gives an all-zero image.

    Args:
        diagram: Array-like of shape ``(k, 2)`` of (birth, death) pairs of one homology
            dimension, as accepted by :func:`diagram_distance`.
        pixels: Number of pixels along the birth axis and along the persistence axis.
        birth_range: (low, high) births covered, in the diagram's units, with
            ``low < high``. ``None`` takes the minimum and maximum finite birth, so the
            images of different diagrams are then not comparable, and bars at the edges
            keep only part of their mass. When every birth is the same value ``b``,
            ``None`` takes ``b`` plus and minus half the maximum persistence (or 0.5
            when that is 0). Without finite bars it takes (0, 1).
        persistence_range: (low, high) persistence covered, ``low < high``. ``None``
            takes 0 and the maximum finite persistence, or (0, 1) when that is 0.
        sigma: Standard deviation of the Gaussian, in the diagram's units, > 0. ``None``
            takes the larger side of one pixel.

    Returns:
        The image, its ranges and kernel width, and the counts of left-out bars.

    Raises:
        InvalidInputError: When the diagram is invalid (see :func:`diagram_distance`),
            or when ``pixels``, a range or ``sigma`` is invalid.
    """
    bars = as_diagram(diagram, "diagram")
    finite = bars[np.isfinite(bars[:, 1])]
    shape = _check_pixels(pixels)
    births = finite[:, 0]
    persistence = finite[:, 1] - finite[:, 0]
    largest = float(np.max(persistence, initial=0.0))
    if birth_range is None:
        birth_range = _fit_birth_range(births, largest)
    else:
        birth_range = _check_range(birth_range, "birth_range")
    if persistence_range is None:
        persistence_range = (0.0, largest if largest > 0 else 1.0)
    else:
        persistence_range = _check_range(persistence_range, "persistence_range")
    pixel_sides = (
        (birth_range[1] - birth_range[0]) / shape[0],
        (persistence_range[1] - persistence_range[0]) / shape[1],
    )
    sigma = max(pixel_sides) if sigma is None else _check_positive(sigma, "sigma")

    outside = _outside(births, birth_range) | _outside(persistence, persistence_range)
    n_outside = int(outside.sum())
    if n_outside:
        _logger.warning(
            "%d of %d finite bars lie outside the persistence image (births %s, "
            "persistence %s), so most of their mass is missing. Widen birth_range or "
            "persistence_range to include them.",
            n_outside,
            len(births),
            birth_range,
            persistence_range,
        )
    values = _render_image(births, persistence, birth_range, persistence_range, shape, sigma)
    return PersistenceImage(
        values=values,
        birth_range=birth_range,
        persistence_range=persistence_range,
        sigma=sigma,
        n_essential=int(np.isinf(bars[:, 1]).sum()),
        n_outside=n_outside,
    )


def _render_image(
    births: NDArray[np.float64],
    persistence: NDArray[np.float64],
    birth_range: tuple[float, float],
    persistence_range: tuple[float, float],
    shape: tuple[int, int],
    sigma: float,
) -> NDArray[np.float64]:
    if len(births) == 0:
        return np.zeros(shape)
    from persim import PersistenceImager  # Imported here to keep `import topselect` fast.

    # Pixels per unit of birth and of persistence. In the scaled plane every pixel is a
    # unit square, and the Gaussian masses per pixel do not change under the scaling.
    birth_scale = shape[0] / (birth_range[1] - birth_range[0])
    persistence_scale = shape[1] / (persistence_range[1] - persistence_range[0])
    points = np.column_stack(
        [
            (births - birth_range[0]) * birth_scale,
            (persistence - persistence_range[0]) * persistence_scale,
        ]
    )
    # persim reads kernel_params["sigma"] as a covariance matrix, not a standard deviation.
    covariance = [[(sigma * birth_scale) ** 2, 0.0], [0.0, (sigma * persistence_scale) ** 2]]
    imager = PersistenceImager(
        birth_range=(0.0, float(shape[0])),
        pers_range=(0.0, float(shape[1])),
        pixel_size=1.0,
        weight=_unscaled_persistence,
        weight_params={"offset": persistence_range[0], "scale": persistence_scale},
        kernel="gaussian",
        kernel_params={"sigma": covariance},
    )
    image = np.asarray(imager.transform(points, skew=False), dtype=np.float64)
    if image.shape != shape:
        raise IncompatibleVersionError(
            f"persim.PersistenceImager returned an image of shape {image.shape} instead of "
            f"{shape}. Install persim 0.4.x, the release this code was tested with."
        )
    return image


def _unscaled_persistence(
    birth: NDArray[np.float64], persistence: NDArray[np.float64], offset: float, scale: float
) -> NDArray[np.float64]:
    """Weight of a scaled point: its persistence in the diagram's units."""
    return persistence / scale + offset


def persistence_landscape(
    diagram: ArrayLike,
    *,
    n_layers: int = 5,
    resolution: int = 100,
    value_range: tuple[float, float] | None = None,
) -> NDArray[np.float64]:
    """Sample the persistence landscape of a diagram on an even grid (Bubenik, 2015).

    Each finite bar (b, d) defines the tent ``max(0, min(t - b, d - t))``. Layer ``k`` of
    the landscape at ``t`` is the ``k``-th largest tent value at ``t`` (``k`` from 1), or
    0 where fewer than ``k`` bars cover ``t``. Essential bars are left out, because their
    tents never come down. No diagram raises an error for being empty or having
    essential bars. An empty diagram, or one with only essential bars, gives zeros.

    Args:
        diagram: Array-like of shape ``(k, 2)`` of (birth, death) pairs of one homology
            dimension, as accepted by :func:`diagram_distance`.
        n_layers: Number of layers, at least 1.
        resolution: Number of grid points, at least 2.
        value_range: (low, high) of the grid, ``low < high``, in the diagram's units. The
            grid is ``np.linspace(low, high, resolution)``, both ends included. ``None``
            takes the lowest finite birth and the highest finite death, so the
            landscapes of different diagrams are then sampled at different points.

    Returns:
        Array of shape ``(n_layers, resolution)``, in the diagram's units. Each column
        is non-increasing from layer 1 down.

    Raises:
        InvalidInputError: When the diagram is invalid (see :func:`diagram_distance`),
            or when ``n_layers``, ``resolution`` or ``value_range`` is invalid.
    """
    bars = as_diagram(diagram, "diagram")
    finite = bars[np.isfinite(bars[:, 1])]
    n_layers = check_count(n_layers, "n_layers", minimum=1)
    resolution = check_count(resolution, "resolution", minimum=2)
    if value_range is not None:
        value_range = _check_range(value_range, "value_range")
    if len(finite) == 0:
        return np.zeros((n_layers, resolution))
    if value_range is None:
        value_range = (float(finite[:, 0].min()), float(finite[:, 1].max()))

    grid = np.linspace(value_range[0], value_range[1], resolution)
    rising = grid[None, :] - finite[:, :1]
    falling = finite[:, 1:] - grid[None, :]
    tents = np.maximum(np.minimum(rising, falling), 0.0)  # Shape (n_bars, resolution).
    return _largest_rows(tents, n_layers)


def _largest_rows(values: NDArray[np.float64], count: int) -> NDArray[np.float64]:
    """Return the ``count`` largest entries of each column, largest first, zero-padded."""
    n_rows = values.shape[0]
    if n_rows > count:
        values = np.partition(values, n_rows - count, axis=0)[n_rows - count :]
    largest = -np.sort(-values, axis=0)
    padding = np.zeros((count - largest.shape[0], values.shape[1]))
    return np.concatenate([largest, padding])


def _check_pixels(pixels: tuple[int, int]) -> tuple[int, int]:
    if not isinstance(pixels, Sequence) or len(pixels) != 2:
        raise InvalidInputError(
            f"pixels must be a pair (n_birth_pixels, n_persistence_pixels), but got {pixels!r}."
        )
    return (
        check_count(pixels[0], "pixels[0]", minimum=1),
        check_count(pixels[1], "pixels[1]", minimum=1),
    )


def _check_range(value_range: tuple[float, float], name: str) -> tuple[float, float]:
    valid = (
        isinstance(value_range, Sequence)
        and len(value_range) == 2
        and all(is_real(v) and math.isfinite(v) for v in value_range)
        and value_range[0] < value_range[1]
    )
    if not valid:
        raise InvalidInputError(
            f"{name} must be a pair (low, high) of finite numbers with low < high, but "
            f"got {value_range!r}."
        )
    return float(value_range[0]), float(value_range[1])


def _check_positive(value: float, name: str) -> float:
    if not is_real(value) or not (0.0 < value < math.inf):
        raise InvalidInputError(f"{name} must be a finite number > 0, but got {value!r}.")
    return float(value)


def _fit_birth_range(births: NDArray[np.float64], largest: float) -> tuple[float, float]:
    """Return the range of ``births``, widened to ``largest`` (or 1) if it is one value."""
    if len(births) == 0:
        return 0.0, 1.0
    low, high = float(births.min()), float(births.max())
    if high > low:
        return low, high
    half_width = (largest if largest > 0 else 1.0) / 2.0
    return low - half_width, high + half_width


def _outside(values: NDArray[np.float64], value_range: tuple[float, float]) -> NDArray[np.bool_]:
    return (values < value_range[0]) | (values > value_range[1])
