"""Random samples of the loss in a k-dimensional subspace around trained parameters."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from topselect.exceptions import InvalidInputError
from topselect.landscape._directions import filter_normalized_direction
from topselect.landscape._engine import DEFAULT_MEMORY_BUDGET
from topselect.landscape._evaluate import LossFn, eval_mode, parameters_of
from topselect.landscape._probe import (
    Strategy,
    check_engine_arguments,
    evaluate_with_fallback,
    json_float,
)
from topselect.topology import DEFAULT_BASIN_LEVELS, Diagrams, graph_sublevel_persistence
from topselect.topology._scores import basin_key, persistence_entropy, total_persistence

if TYPE_CHECKING:
    import torch

    from topselect.landscape._probe_set import ProbeSet

__all__ = ["SUBSPACE_SCHEMA_VERSION", "SubspaceResult", "probe_subspace", "subspace_scores"]

_logger = logging.getLogger(__name__)

#: Version of the dictionary layout returned by :meth:`SubspaceResult.to_dict`.
SUBSPACE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class SubspaceResult:
    """Loss samples in a random k-dimensional subspace, their persistence and scores.

    Attributes:
        coefficients: Sample coordinates ``(m, k)`` in filter-normalized units; row 0 is
            the origin (the trained parameters).
        values: Probe-set losses ``(m,)`` at ``theta + coefficients[i] @ directions``.
        edges: Neighbour graph ``(e, 2)`` over the samples that the filtration runs on.
        diagrams: Lower-star persistence of ``values`` on that graph (H0 only).
        scores: See :func:`subspace_scores`.
        seed: Seed of the directions and of the sample positions.
        probe_fingerprint: Fingerprint of the probe set the losses were measured on.
        strategy: How the samples were evaluated (``"loop"``, ``"vmap"`` or ``"stacked"``).
        seconds: Wall time of the evaluation, the persistence and the scores.
        n_parameters: Number of floating-point parameters of the model.
        settings: The remaining arguments, for the record.
    """

    coefficients: NDArray[np.float64]
    values: NDArray[np.float64]
    edges: NDArray[np.intp]
    diagrams: Diagrams
    scores: dict[str, float]
    seed: int
    probe_fingerprint: str
    strategy: str
    seconds: float
    n_parameters: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dictionary (no NaN or inf: those become ``None``)."""
        return {
            "schema_version": SUBSPACE_SCHEMA_VERSION,
            "coefficients": self.coefficients.tolist(),
            "values": [json_float(v) for v in self.values],
            "edges": self.edges.tolist(),
            "diagrams": self.diagrams.to_dict(),
            "scores": {k: json_float(v) for k, v in self.scores.items()},
            "seed": self.seed,
            "probe_fingerprint": self.probe_fingerprint,
            "strategy": self.strategy,
            "seconds": self.seconds,
            "n_parameters": self.n_parameters,
            "settings": self.settings,
        }


def probe_subspace(
    model: torch.nn.Module,
    loss_fn: LossFn,
    probe: ProbeSet,
    *,
    dim: int = 8,
    n_samples: int = 512,
    radius: float = 1.0,
    neighbors: int = 10,
    seed: int = 0,
    strategy: Strategy = "auto",
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    autocast_dtype: torch.dtype | None = None,
    basin_levels: tuple[float, ...] = DEFAULT_BASIN_LEVELS,
) -> SubspaceResult:
    """Sample the loss in a random ``dim``-dimensional ball around the model's parameters.

    ``dim`` filter-normalized directions are drawn from ``seed`` in the same order as
    :func:`probe_landscape` draws its two, so the first two span the same plane as a 2-D
    slice with that seed. Sample positions are uniform in the ball of ``radius`` (in
    filter-normalized units), with the origin as sample 0. Each sample is joined to its
    ``neighbors`` nearest samples, and the lower-star persistence of the losses on that
    graph replaces the grid filtration of a 2-D slice. A 2-D slice cannot show a basin
    that is narrow along directions outside its plane. These samples can, but each
    direction is sampled more coarsely.

    Args:
        model: Trained network; samples are evaluated on its device.
        loss_fn: ``loss_fn(outputs, targets)`` giving the mean loss as a scalar tensor.
        probe: Probe set (see :func:`topselect.landscape.make_probe_set`).
        dim: Number of directions ``k`` (>= 1).
        n_samples: Number of samples ``m`` including the origin (> ``neighbors``).
        radius: Radius of the ball (> 0).
        neighbors: Nearest neighbours joined to each sample (>= 1).
        seed: Seed of the directions and positions.
        strategy: ``"auto"``, ``"loop"``, ``"vmap"`` or ``"stacked"``, as for
            :func:`probe_landscape`.
        chunk_size: Samples per batched call; ``None`` derives it from ``memory_budget``.
        memory_budget: Bytes one chunk may use for stacked parameters and activations.
        autocast_dtype: Run forward passes under ``torch.autocast`` with this dtype.
        basin_levels: Loss increments at which the basin fraction is reported.

    Returns:
        The samples, their graph, diagrams and scores.

    Raises:
        InvalidInputError: For a bad ``dim``, ``n_samples``, ``radius``, ``neighbors``,
            ``strategy``, ``chunk_size`` or ``memory_budget``, a model without
            floating-point parameters, or samples whose losses are all non-finite.
    """
    _check_subspace_arguments(dim, n_samples, radius, neighbors)
    check_engine_arguments(strategy, chunk_size, memory_budget)
    params = parameters_of(model)
    if not params:
        raise InvalidInputError("model has no floating-point parameters to probe.")

    import torch

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    directions = [filter_normalized_direction(params, generator) for _ in range(dim)]
    coefficients = _ball_samples(n_samples, dim, radius, seed)
    with eval_mode(model):
        values, plan = evaluate_with_fallback(
            model,
            loss_fn,
            probe,
            params,
            directions,
            coefficients,
            strategy=strategy,
            chunk_size=chunk_size,
            memory_budget=memory_budget,
            autocast_dtype=autocast_dtype,
        )
    edges = neighbor_edges(coefficients, neighbors)
    # H0 only: in a nearest-neighbour graph of a k-dimensional sample most cycles are gaps
    # between samples (triangles missing from the flag complex), not loops of the landscape.
    diagrams = graph_sublevel_persistence(values, edges, max_dim=0)
    scores = subspace_scores(values, edges, diagrams, basin_levels)
    seconds = time.perf_counter() - started
    _logger.debug("Probed %d samples in %d dimensions in %.2f s.", n_samples, dim, seconds)
    return SubspaceResult(
        coefficients=coefficients,
        values=values,
        edges=edges,
        diagrams=diagrams,
        scores=scores,
        seed=seed,
        probe_fingerprint=probe.fingerprint,
        strategy=plan.strategy,
        seconds=seconds,
        n_parameters=sum(p.numel() for p in params.values()),
        settings={
            "dim": dim,
            "n_samples": n_samples,
            "radius": radius,
            "neighbors": neighbors,
            "basin_levels": list(basin_levels),
            "direction": "filter-normalized, biases and 1-D tensors fixed",
            "probe_size": len(probe),
            "chunk_size": plan.chunk_size,
            "memory_budget": plan.memory_budget,
            "autocast_dtype": None if autocast_dtype is None else str(autocast_dtype),
        },
    )


def neighbor_edges(points: NDArray[np.float64], neighbors: int) -> NDArray[np.intp]:
    """Return the edges ``(e, 2)`` joining each point to its ``neighbors`` nearest others.

    The graph is the symmetric k-nearest-neighbour graph (an edge when either end is among
    the other's nearest), listed once per pair with the smaller index first.
    """
    from scipy.spatial import cKDTree

    count = min(neighbors + 1, len(points))
    _, index = cKDTree(points).query(points, k=count)
    index = np.asarray(index).reshape(len(points), count)
    first = np.repeat(np.arange(len(points)), count - 1)
    second = index[:, 1:].ravel()
    pairs = np.column_stack([np.minimum(first, second), np.maximum(first, second)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0).astype(np.intp)


def subspace_scores(
    values: NDArray[np.float64],
    edges: NDArray[np.intp],
    diagrams: Diagrams,
    levels: Sequence[float] = DEFAULT_BASIN_LEVELS,
) -> dict[str, float]:
    """Compute the flatness scores of subspace samples, with the origin at index 0.

    The keys are those of :func:`topselect.topology.flatness_scores` without the H1 scores,
    so rankings can read either.
    ``basin_area_<delta>`` is here the fraction of samples in the connected component of
    ``{values <= values[0] + delta}`` (on the neighbour graph) that contains sample 0, an
    estimate of the basin's share of the ball's volume. ``basin_integral`` is its mean over
    ``[0, max(levels)]`` by the trapezoid rule.

    Raises:
        InvalidInputError: When ``values[0]`` is not finite or a level is negative.
    """
    base = float(values[0])
    if not np.isfinite(base):
        raise InvalidInputError(
            f"the loss at the trained parameters is {base}, not a finite loss."
        )
    low, high = diagrams.value_range
    loss_range = high - low
    scores: dict[str, float] = {
        "center_loss": base,
        "loss_range": float(loss_range),
        "n_nonfinite": float(diagrams.n_nonfinite),
    }
    tp = total_persistence(diagrams, 0)
    scores["tp_h0"] = tp
    scores["tp_h0_norm"] = tp / loss_range if loss_range > 0 else 0.0
    scores["entropy_h0"] = persistence_entropy(diagrams, 0)
    scores["n_bars_h0"] = float(len(diagrams.finite(0)))
    ordered = sorted(levels)
    if any(delta < 0 for delta in ordered):
        raise InvalidInputError(f"basin levels must be >= 0, but got {list(levels)}.")
    areas = np.array([_basin_fraction(values, edges, base + delta) for delta in ordered])
    for delta, area in zip(ordered, areas, strict=True):
        scores[basin_key(delta)] = float(area)
    xs = np.concatenate([[0.0], ordered])
    ys = np.concatenate([[_basin_fraction(values, edges, base)], areas])
    scores["basin_integral"] = float(np.trapezoid(ys, xs) / xs[-1]) if xs[-1] > 0 else ys[-1]
    return scores


def _basin_fraction(values: NDArray[np.float64], edges: NDArray[np.intp], level: float) -> float:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    with np.errstate(invalid="ignore"):
        inside = values <= level  # NaN and +inf samples never join a basin.
    keep = inside[edges[:, 0]] & inside[edges[:, 1]]
    n = len(values)
    graph = coo_matrix((np.ones(int(keep.sum())), (edges[keep, 0], edges[keep, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    member = inside & (labels == labels[0])
    return float(member.sum() / n)


def _ball_samples(n_samples: int, dim: int, radius: float, seed: int) -> NDArray[np.float64]:
    """Return ``n_samples`` points uniform in the ``dim``-ball of ``radius``; row 0 is 0."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((n_samples - 1, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = radius * rng.random(n_samples - 1) ** (1.0 / dim)
    return np.vstack([np.zeros((1, dim)), directions * radii[:, None]])


def _check_subspace_arguments(dim: int, n_samples: int, radius: float, neighbors: int) -> None:
    if dim < 1:
        raise InvalidInputError(f"dim must be >= 1, but got {dim}.")
    if neighbors < 1:
        raise InvalidInputError(f"neighbors must be >= 1, but got {neighbors}.")
    if n_samples <= neighbors:
        raise InvalidInputError(
            f"n_samples must exceed neighbors ({neighbors}), but got {n_samples}. "
            f"Use n_samples >= {neighbors + 1}, or fewer neighbors."
        )
    if not (np.isfinite(radius) and radius > 0):
        raise InvalidInputError(f"radius must be a finite number > 0, but got {radius}.")
