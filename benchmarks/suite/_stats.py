"""Rank and regression statistics for the benchmarks: Kendall tau, granulated Kendall
Psi, R^2 with and without a control variable, and bootstrap intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "bootstrap_interval",
    "granulated_psi",
    "kendall_tau",
    "r_squared",
    "residuals",
]


def _clean(*columns: ArrayLike) -> list[NDArray[np.float64]]:
    """Return the columns as float arrays, keeping only rows where every value is finite."""
    arrays = [np.asarray(c, dtype=np.float64) for c in columns]
    keep = np.all([np.isfinite(a) for a in arrays], axis=0)
    return [a[keep] for a in arrays]


def kendall_tau(x: ArrayLike, y: ArrayLike) -> float:
    """Return Kendall's tau-b between ``x`` and ``y`` over rows where both are finite.

    NaN when fewer than two rows remain or either column is constant there.
    """
    from scipy.stats import kendalltau

    a, b = _clean(x, y)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(kendalltau(a, b).statistic)


def r_squared(x: ArrayLike, y: ArrayLike) -> float:
    """Return the R^2 of the least-squares line of ``y`` on ``x`` (squared Pearson r).

    Only rows where both are finite count. NaN when fewer than three remain or either
    column is constant.
    """
    a, b = _clean(x, y)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1] ** 2)


def residuals(y: ArrayLike, control: ArrayLike) -> NDArray[np.float64]:
    """Return ``y`` minus its least-squares fit on ``control`` (with an intercept).

    Rows where either value is not finite give NaN, so they drop out of later statistics.
    """
    y_all = np.asarray(y, dtype=np.float64)
    c_all = np.asarray(control, dtype=np.float64)
    out = np.full(y_all.shape, math.nan)
    keep = np.isfinite(y_all) & np.isfinite(c_all)
    if keep.sum() < 3:
        return out
    design = np.column_stack([np.ones(keep.sum()), c_all[keep]])
    coefficients, *_ = np.linalg.lstsq(design, y_all[keep], rcond=None)
    out[keep] = y_all[keep] - design @ coefficients
    return out


def granulated_psi(
    groups: Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]],
) -> tuple[float, dict[str, float]]:
    """Return granulated Kendall Psi and its per-hyperparameter terms.

    Jiang et al. 2020 ("Fantastic Generalization Measures and Where to Find Them")
    define psi_i as the mean Kendall tau between a measure and generalization over the
    groups of models that share every hyperparameter except the i-th, and Psi as the
    mean of psi_i over hyperparameters.

    Args:
        groups: For each hyperparameter, its groups as ``(measure values, target values)``.
            Groups where tau is undefined (a constant column) are left out of psi_i.

    Returns:
        ``(Psi, {hyperparameter: psi_i})``. A hyperparameter with no defined group gets
        NaN and is left out of Psi.
    """
    terms: dict[str, float] = {}
    for name, name_groups in groups.items():
        taus = [kendall_tau(x, y) for x, y in name_groups]
        defined = [t for t in taus if math.isfinite(t)]
        terms[name] = float(np.mean(defined)) if defined else math.nan
    defined_terms = [t for t in terms.values() if math.isfinite(t)]
    psi = float(np.mean(defined_terms)) if defined_terms else math.nan
    return psi, terms


def bootstrap_interval(
    values: ArrayLike, *, seed: int, resamples: int = 10_000, level: float = 0.95
) -> tuple[float, float]:
    """Return the percentile bootstrap interval of the mean of ``values``.

    NaN values are dropped first. Returns ``(nan, nan)`` for an empty input.
    """
    (data,) = _clean(values)
    if len(data) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = rng.choice(data, size=(resamples, len(data)), replace=True).mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)
