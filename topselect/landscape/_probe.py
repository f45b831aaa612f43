"""Two-dimensional loss-landscape slices around trained parameters."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from topselect.exceptions import InvalidInputError
from topselect.landscape._directions import filter_normalized_direction
from topselect.landscape._evaluate import LossFn, ParameterEvaluator, eval_mode, parameters_of
from topselect.topology import DEFAULT_BASIN_LEVELS, Diagrams, flatness_scores
from topselect.topology import sublevel_persistence as _sublevel_persistence

if TYPE_CHECKING:
    import torch

    from topselect.landscape._probe_set import ProbeSet

__all__ = ["LandscapeResult", "check_probe_arguments", "probe_landscape"]

_logger = logging.getLogger(__name__)

Strategy = Literal["auto", "loop", "vmap"]

#: Version of the dictionary layout returned by :meth:`LandscapeResult.to_dict`.
LANDSCAPE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LandscapeResult:
    """One landscape slice, its persistence diagrams and its flatness scores.

    Attributes:
        axis: Coordinates ``(n,)`` along both directions, from ``-radius`` to ``radius``.
            A coordinate of 1 moves every filter by its own norm.
        values: Probe-set losses ``(n, n)``; ``values[i, j]`` is the loss at
            ``theta + axis[i] * d1 + axis[j] * d2``. May hold NaN or inf for a diverged
            model; ``diagrams.n_nonfinite`` counts those cells.
        diagrams: Sublevel persistence of ``values``.
        scores: Flatness scores (see :func:`topselect.topology.flatness_scores`).
        seed: Seed of the two directions.
        probe_fingerprint: Fingerprint of the probe set the losses were measured on.
        strategy: How the grid was evaluated (``"loop"`` or ``"vmap"``).
        seconds: Wall time of the grid evaluation and the persistence computation.
    """

    axis: NDArray[np.float64]
    values: NDArray[np.float64]
    diagrams: Diagrams
    scores: dict[str, float]
    seed: int
    probe_fingerprint: str
    strategy: str
    seconds: float
    n_parameters: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def center(self) -> tuple[int, int]:
        """Grid index of the trained parameters."""
        middle = len(self.axis) // 2
        return (middle, middle)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dictionary (no NaN or inf: those become ``None``)."""
        return {
            "schema_version": LANDSCAPE_SCHEMA_VERSION,
            "axis": self.axis.tolist(),
            "values": [[_json_float(v) for v in row] for row in self.values],
            "scores": {k: _json_float(v) for k, v in self.scores.items()},
            "seed": self.seed,
            "probe_fingerprint": self.probe_fingerprint,
            "strategy": self.strategy,
            "seconds": self.seconds,
            "n_parameters": self.n_parameters,
            "settings": self.settings,
        }


def probe_landscape(
    model: torch.nn.Module,
    loss_fn: LossFn,
    probe: ProbeSet,
    *,
    grid_size: int = 31,
    radius: float = 1.0,
    seed: int = 0,
    strategy: Strategy = "auto",
    chunk_size: int = 64,
    basin_levels: tuple[float, ...] = DEFAULT_BASIN_LEVELS,
    directions: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
) -> LandscapeResult:
    """Evaluate the loss on a 2-D slice around the model's parameters and analyse it.

    Two filter-normalized directions ``d1, d2`` are drawn from ``seed`` (see
    :func:`filter_normalized_direction`), unless ``directions`` gives them (for example
    the plane of a trajectory, see :func:`trajectory_plane`). The probe-set loss is evaluated at
    ``theta + a * d1 + b * d2`` for ``a, b`` on a ``grid_size x grid_size`` grid over
    ``[-radius, radius]``, and the grid's sublevel persistence and flatness scores are
    computed. The model's parameters and buffers are never modified, and every
    submodule's train/eval mode is restored on return.

    Args:
        model: Trained network; the grid is evaluated on its device.
        loss_fn: ``loss_fn(outputs, targets)`` giving the mean loss as a scalar tensor.
        probe: Probe set (see :func:`topselect.landscape.make_probe_set`).
        grid_size: Points per axis; odd and >= 3 so that the centre is a grid point.
        radius: Half-width of the slice in filter-normalized units (> 0).
        seed: Seed of the directions. Use one seed per study so trials are comparable.
        strategy: ``"loop"`` evaluates one grid point per forward pass; ``"vmap"``
            evaluates ``chunk_size`` points per pass with ``torch.vmap``. ``"auto"`` uses
            the loop on CPU for models with convolutions or over 40,000 parameters and
            vmap otherwise, and falls back to the loop when vmap fails on the model.
        chunk_size: Grid points per vmapped call.
        basin_levels: Loss increments at which the basin area is reported.
        directions: Two mappings from parameter name to a tensor of that parameter's
            shape. When given, ``seed`` is not used for directions.

    Returns:
        The slice, its diagrams and scores.

    Raises:
        InvalidInputError: For a bad ``grid_size``, ``radius``, ``strategy`` or
            ``chunk_size``, a model without floating-point parameters, directions that do
            not match the parameters, or a slice whose losses are all non-finite.
    """
    check_probe_arguments(grid_size, radius, strategy, chunk_size)
    params = parameters_of(model)
    if not params:
        raise InvalidInputError("model has no floating-point parameters to probe.")
    evaluator = ParameterEvaluator(model, loss_fn, probe)
    n_parameters = sum(p.numel() for p in params.values())
    chosen = _choose_strategy(
        strategy, evaluator.device.type, n_parameters, _has_convolution(model)
    )

    import torch

    started = time.perf_counter()
    if directions is None:
        generator = torch.Generator().manual_seed(seed)
        d1 = filter_normalized_direction(params, generator)
        d2 = filter_normalized_direction(params, generator)
        direction_kind = "filter-normalized, biases and 1-D tensors fixed"
    else:
        d1, d2 = (
            _check_direction(d, params, f"directions[{i}]") for i, d in enumerate(directions)
        )
        direction_kind = "given"
    axis = np.linspace(-radius, radius, grid_size)
    axis[grid_size // 2] = 0.0  # Exactly the trained parameters, free of rounding.
    with eval_mode(model):
        if chosen == "loop":
            values = _loop_grid(evaluator, params, d1, d2, axis)
        elif strategy == "vmap":
            values = _vmap_grid(evaluator, params, d1, d2, axis, chunk_size)
        else:
            try:
                values = _vmap_grid(evaluator, params, d1, d2, axis, chunk_size)
            except RuntimeError as error:
                # torch.vmap rejects models that read tensor values in Python (.item(),
                # data-dependent branches); the loop evaluates any model.
                _logger.info("vmap failed (%s); probing with the loop instead.", error)
                chosen = "loop"
                values = _loop_grid(evaluator, params, d1, d2, axis)
    diagrams = _sublevel_persistence(values)
    middle = grid_size // 2
    scores = flatness_scores(values, diagrams, (middle, middle), basin_levels)
    seconds = time.perf_counter() - started
    _logger.debug("Probed a %dx%d slice in %.2f s (%s).", grid_size, grid_size, seconds, chosen)
    return LandscapeResult(
        axis=axis,
        values=values,
        diagrams=diagrams,
        scores=scores,
        seed=seed,
        probe_fingerprint=probe.fingerprint,
        strategy=chosen,
        seconds=seconds,
        n_parameters=n_parameters,
        settings={
            "grid_size": grid_size,
            "radius": radius,
            "basin_levels": list(basin_levels),
            "direction": direction_kind,
            "probe_size": len(probe),
        },
    )


def _check_direction(
    direction: Mapping[str, torch.Tensor], params: dict[str, torch.Tensor], label: str
) -> dict[str, torch.Tensor]:
    if direction.keys() != params.keys():
        missing = sorted(params.keys() - direction.keys())
        extra = sorted(direction.keys() - params.keys())
        raise InvalidInputError(
            f"{label} does not match the model's parameters: missing {missing}, "
            f"unexpected {extra}."
        )
    out = {}
    for name, p in params.items():
        d = direction[name]
        if tuple(d.shape) != tuple(p.shape):
            raise InvalidInputError(
                f"{label}[{name!r}] has shape {tuple(d.shape)}, but the parameter has "
                f"{tuple(p.shape)}."
            )
        out[name] = d.detach().to(device=p.device, dtype=p.dtype)
    return out


def check_probe_arguments(grid_size: int, radius: float, strategy: str, chunk_size: int) -> None:
    """Raise :class:`InvalidInputError` for a grid, radius, strategy or chunk size the probe
    cannot use, so callers can check settings before any training runs."""
    if grid_size < 3 or grid_size % 2 == 0:
        raise InvalidInputError(
            f"grid_size must be odd and >= 3 so the trained parameters sit on the centre "
            f"point, but got {grid_size}. Try {max(3, grid_size + 1 - grid_size % 2)}."
        )
    if not (np.isfinite(radius) and radius > 0):
        raise InvalidInputError(f"radius must be a finite number > 0, but got {radius}.")
    if strategy not in ("auto", "loop", "vmap"):
        raise InvalidInputError(
            f"strategy must be 'auto', 'loop' or 'vmap', but got {strategy!r}."
        )
    if chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be >= 1, but got {chunk_size}.")


# On 2 CPU cores, vmap beat the loop 1.4-1.8x for digits MLPs of 2-9k parameters and tied
# at 43k. For a 3k-parameter MNIST-1D CNN it was 4-5x slower, because vmapped weights turn
# each convolution into a grouped one (BENCHMARKS.md).
_CPU_VMAP_MAX_PARAMETERS = 40_000


def _choose_strategy(
    strategy: Strategy, device_type: str, n_parameters: int, has_convolution: bool
) -> str:
    # NOTE: rules from CPU measurements of two model families; GPUs have not been
    # measured yet.
    if strategy != "auto":
        return strategy
    if device_type == "cpu" and (has_convolution or n_parameters > _CPU_VMAP_MAX_PARAMETERS):
        return "loop"
    return "vmap"


def _has_convolution(model: torch.nn.Module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def _loop_grid(evaluator, params, d1, d2, axis) -> NDArray[np.float64]:
    n = len(axis)
    values = np.empty((n, n))
    for i, a in enumerate(axis):
        for j, b in enumerate(axis):
            point = {k: p + float(a) * d1[k] + float(b) * d2[k] for k, p in params.items()}
            values[i, j] = evaluator.loss(point)
    return values


def _vmap_grid(evaluator, params, d1, d2, axis, chunk_size) -> NDArray[np.float64]:
    import torch

    n = len(axis)
    coords = [(float(a), float(b)) for a in axis for b in axis]
    flat: list[float] = []
    for start in range(0, len(coords), chunk_size):
        chunk = coords[start : start + chunk_size]
        a = torch.tensor([c[0] for c in chunk], device=evaluator.device)
        b = torch.tensor([c[1] for c in chunk], device=evaluator.device)
        stacked = {}
        for k, p in params.items():
            shape = (-1,) + (1,) * p.dim()
            stacked[k] = (
                p.unsqueeze(0)
                + a.to(p.dtype).reshape(shape) * d1[k].unsqueeze(0)
                + b.to(p.dtype).reshape(shape) * d2[k].unsqueeze(0)
            )
        flat.extend(evaluator.batched_losses(stacked))
    return np.asarray(flat, dtype=np.float64).reshape(n, n)


def _json_float(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
