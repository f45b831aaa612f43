"""Validation of persistence diagrams passed to the distance and vector functions."""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike, NDArray

from topselect.exceptions import InvalidInputError


def as_diagram(diagram: ArrayLike, name: str) -> NDArray[np.float64]:
    """Return ``diagram`` as a float64 array of shape ``(k, 2)``, or raise."""
    try:
        bars = np.asarray(diagram, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"{name} must be an array of (birth, death) pairs, but converting it to "
            f"float64 failed: {error}"
        ) from error
    if bars.ndim == 1 and bars.size == 0:
        return np.empty((0, 2))
    if bars.ndim != 2 or bars.shape[1] != 2:
        raise InvalidInputError(
            f"{name} must have shape (k, 2), one (birth, death) pair per row, but got "
            f"shape {bars.shape}. Pass one homology dimension at a time, such as "
            "Diagrams.h0."
        )
    check_bars(bars, name)
    return bars


def check_bars(bars: NDArray[np.float64], name: str) -> None:
    nan_rows = np.flatnonzero(np.isnan(bars).any(axis=1))
    if nan_rows.size:
        row = nan_rows[0]
        raise InvalidInputError(
            f"{name} contains NaN in {nan_rows.size} rows, the first being row {row}: "
            f"{bars[row].tolist()}. Drop or repair those rows."
        )
    bad_births = np.flatnonzero(~np.isfinite(bars[:, 0]))
    if bad_births.size:
        row = bad_births[0]
        raise InvalidInputError(
            f"{name} must have finite births, but row {row} is {bars[row].tolist()}. "
            "Only deaths may be inf, for essential bars."
        )
    reversed_rows = np.flatnonzero(bars[:, 1] < bars[:, 0])
    if reversed_rows.size:
        row = reversed_rows[0]
        raise InvalidInputError(
            f"{name} must have death >= birth in every row, but row {row} is "
            f"{bars[row].tolist()}. Check that the columns are (birth, death)."
        )


def is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_count(value: int, name: str, *, minimum: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, but got {value!r}.")
    return int(value)
