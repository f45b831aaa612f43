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
from topselect.landscape._engine import (
    DEFAULT_MEMORY_BUDGET,
    STRATEGIES,
    EvaluationPlan,
    choose_strategy,
    evaluate_points,
    plan_evaluation,
    stack_steps,
)
from topselect.landscape._evaluate import LossFn, ParameterEvaluator, eval_mode, parameters_of
from topselect.topology import DEFAULT_BASIN_LEVELS, Diagrams, flatness_scores
from topselect.topology import sublevel_persistence as _sublevel_persistence

if TYPE_CHECKING:
    import torch

    from topselect.landscape._probe_set import ProbeSet

__all__ = [
    "LandscapeResult",
    "check_engine_arguments",
    "check_probe_arguments",
    "evaluate_with_fallback",
    "json_float",
    "probe_landscape",
]

_logger = logging.getLogger(__name__)

Strategy = Literal["auto", "loop", "vmap", "stacked"]

#: Version of the dictionary layout returned by :meth:`LandscapeResult.to_dict`. Version 2
#: added ``diagrams``.
LANDSCAPE_SCHEMA_VERSION = 2


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
        strategy: How the grid was evaluated (``"loop"``, ``"vmap"`` or ``"stacked"``).
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
            "values": [[json_float(v) for v in row] for row in self.values],
            "diagrams": self.diagrams.to_dict(),
            "scores": {k: json_float(v) for k, v in self.scores.items()},
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
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    autocast_dtype: torch.dtype | None = None,
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
            evaluates a chunk of points per pass with ``torch.vmap``; ``"stacked"`` uses
            batched matrix products for ``nn.Sequential`` MLPs (see
            :mod:`topselect.landscape._engine`). ``"auto"`` uses ``stacked`` where it
            applies, then the loop on CPU for models with convolutions or over 40,000
            parameters, and vmap otherwise. It falls back to the loop when vmap fails on
            the model.
        chunk_size: Grid points per batched call. ``None`` derives it from
            ``memory_budget`` (on the CPU at most 64 for vmap and 16 for ``stacked``,
            the fastest sizes measured on two cores).
        memory_budget: Bytes one chunk may use for stacked parameters and activations.
        autocast_dtype: Run forward passes under ``torch.autocast`` with this dtype
            (e.g. ``torch.bfloat16``) to probe as a mixed-precision model runs. ``None``
            evaluates in the parameters' own dtype.
        basin_levels: Loss increments at which the basin area is reported.
        directions: Two mappings from parameter name to a tensor of that parameter's
            shape. When given, ``seed`` is not used for directions.

    Returns:
        The slice, its diagrams and scores.

    Raises:
        InvalidInputError: For a bad ``grid_size``, ``radius``, ``strategy``,
            ``chunk_size`` or ``memory_budget``, a model without floating-point
            parameters, directions that do not match the parameters, ``strategy="stacked"``
            on a model it does not support, or a slice whose losses are all non-finite.
    """
    check_probe_arguments(grid_size, radius, strategy, chunk_size, memory_budget)
    params = parameters_of(model)
    if not params:
        raise InvalidInputError("model has no floating-point parameters to probe.")

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
    coefficients = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    with eval_mode(model):
        flat, plan = evaluate_with_fallback(
            model,
            loss_fn,
            probe,
            params,
            [d1, d2],
            coefficients,
            strategy=strategy,
            chunk_size=chunk_size,
            memory_budget=memory_budget,
            autocast_dtype=autocast_dtype,
        )
    values = flat.reshape(grid_size, grid_size)
    diagrams = _sublevel_persistence(values)
    middle = grid_size // 2
    scores = flatness_scores(values, diagrams, (middle, middle), basin_levels)
    seconds = time.perf_counter() - started
    _logger.debug(
        "Probed a %dx%d slice in %.2f s (%s).", grid_size, grid_size, seconds, plan.strategy
    )
    return LandscapeResult(
        axis=axis,
        values=values,
        diagrams=diagrams,
        scores=scores,
        seed=seed,
        probe_fingerprint=probe.fingerprint,
        strategy=plan.strategy,
        seconds=seconds,
        n_parameters=sum(p.numel() for p in params.values()),
        settings={
            "grid_size": grid_size,
            "radius": radius,
            "basin_levels": list(basin_levels),
            "direction": direction_kind,
            "probe_size": len(probe),
            "chunk_size": plan.chunk_size,
            "memory_budget": plan.memory_budget,
            "autocast_dtype": None if autocast_dtype is None else str(autocast_dtype),
        },
    )


def evaluate_with_fallback(
    model: torch.nn.Module,
    loss_fn: LossFn,
    probe: ProbeSet,
    params: dict[str, torch.Tensor],
    directions: list[dict[str, torch.Tensor]],
    coefficients: NDArray[np.float64],
    *,
    strategy: str,
    chunk_size: int | None,
    memory_budget: int,
    autocast_dtype: torch.dtype | None,
) -> tuple[NDArray[np.float64], EvaluationPlan]:
    """Evaluate the loss at every row of ``coefficients`` with the resolved strategy.

    The caller keeps ``model`` in eval mode. With ``strategy="auto"``, a vmap failure falls
    back to the loop. Returns the ``(m,)`` losses and the plan that produced them.
    """
    evaluator = ParameterEvaluator(model, loss_fn, probe)
    n_parameters = sum(p.numel() for p in params.values())
    chosen = choose_strategy(
        strategy,
        evaluator.device.type,
        n_parameters,
        _has_convolution(model),
        stack_steps(model) is not None,
    )
    plan = plan_evaluation(evaluator, chosen, chunk_size, memory_budget, len(coefficients))
    if strategy != "auto" or chosen != "vmap":
        return (
            evaluate_points(evaluator, params, directions, coefficients, plan, autocast_dtype),
            plan,
        )
    try:
        values = evaluate_points(evaluator, params, directions, coefficients, plan, autocast_dtype)
    except RuntimeError as error:
        # torch.vmap rejects models that read tensor values in Python (.item(),
        # data-dependent branches); the loop evaluates any model.
        _logger.info("vmap failed (%s); probing with the loop instead.", error)
        plan = plan_evaluation(evaluator, "loop", None, memory_budget, len(coefficients))
        values = evaluate_points(evaluator, params, directions, coefficients, plan, autocast_dtype)
    return values, plan


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


def check_probe_arguments(
    grid_size: int,
    radius: float,
    strategy: str,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> None:
    """Raise :class:`InvalidInputError` for a grid, radius, strategy, chunk size or memory
    budget the probe cannot use, so callers can check settings before any training runs."""
    if grid_size < 3 or grid_size % 2 == 0:
        raise InvalidInputError(
            f"grid_size must be odd and >= 3 so the trained parameters sit on the centre "
            f"point, but got {grid_size}. Try {max(3, grid_size + 1 - grid_size % 2)}."
        )
    if not (np.isfinite(radius) and radius > 0):
        raise InvalidInputError(f"radius must be a finite number > 0, but got {radius}.")
    check_engine_arguments(strategy, chunk_size, memory_budget)


def check_engine_arguments(strategy: str, chunk_size: int | None, memory_budget: int) -> None:
    """Raise :class:`InvalidInputError` for an unknown strategy, a chunk size below 1 or a
    memory budget that is not a positive number of bytes."""
    if strategy not in STRATEGIES:
        names = ", ".join(repr(s) for s in STRATEGIES)
        raise InvalidInputError(f"strategy must be one of {names}, but got {strategy!r}.")
    if chunk_size is not None and chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be >= 1 or None, but got {chunk_size}.")
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1:
        raise InvalidInputError(
            f"memory_budget must be a positive number of bytes, but got {memory_budget!r}. "
            "For example 512 * 2**20 for 512 MiB."
        )


def _has_convolution(model: torch.nn.Module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def json_float(value: float) -> float | None:
    """Return ``value`` as a float, or ``None`` for NaN and infinities (JSON has neither)."""
    value = float(value)
    return value if np.isfinite(value) else None
