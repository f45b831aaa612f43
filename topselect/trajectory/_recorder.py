"""Waypoints of a training run at fixed fractions of its progress, and their summary."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from topselect.exceptions import InvalidInputError
from topselect.trajectory._sketch import sketch

if TYPE_CHECKING:
    import torch

    from topselect.landscape import LossFn, ProbeSet

__all__ = [
    "DEFAULT_FRACTIONS",
    "TRAJECTORY_SCHEMA_VERSION",
    "TrajectoryRecorder",
    "TrajectorySummary",
    "flatten_parameters",
    "summarize_waypoints",
    "waypoint_losses",
    "write_trajectory_artifacts",
]

_logger = logging.getLogger(__name__)

#: Nine waypoints from the initial parameters (0.0) to the end of training (1.0).
DEFAULT_FRACTIONS: tuple[float, ...] = tuple(i / 8 for i in range(9))

#: Version of the dictionary layout returned by :meth:`TrajectorySummary.to_dict`.
TRAJECTORY_SCHEMA_VERSION = 2

# Reported progress within this distance below a fraction counts as reaching it, so that
# progress computed as step / steps in floating point does not miss a waypoint.
_PROGRESS_TOLERANCE = 1e-12


@dataclass(frozen=True)
class TrajectorySummary:
    """Shape of a recorded trajectory.

    Attributes:
        fractions: Progress fractions of the recorded waypoints, ascending.
        progress: Progress reported when each waypoint was recorded (>= its fraction;
            larger when the caller's progress jumped past the fraction).
        path_length: Sum of Euclidean distances between consecutive waypoints, in
            parameter units.
        displacement: Euclidean distance from the first to the last waypoint.
        tortuosity: ``path_length / displacement`` (>= 1; ``inf`` if displacement is 0).
        losses: Probe-set loss at each waypoint, or ``None`` where not evaluated.
        explained_variance: Fraction of the waypoints' variance along each of their top
            principal directions (at most ``len(fractions) - 1`` entries; empty for a
            single waypoint or non-finite parameters).
        sketches: ``(len(fractions), k)`` seeded projections of the waypoints.
        complete: Whether the final configured fraction was recorded.
    """

    fractions: list[float]
    progress: list[float]
    path_length: float
    displacement: float
    tortuosity: float
    losses: list[float | None]
    explained_variance: list[float]
    sketches: list[list[float]]
    complete: bool

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dictionary (non-finite numbers become ``None``)."""
        return {
            "schema_version": TRAJECTORY_SCHEMA_VERSION,
            "fractions": self.fractions,
            "progress": self.progress,
            "path_length": _finite_or_none(self.path_length),
            "displacement": _finite_or_none(self.displacement),
            "tortuosity": _finite_or_none(self.tortuosity),
            "losses": [_finite_or_none(v) for v in self.losses],
            "explained_variance": self.explained_variance,
            "sketches": [[_finite_or_none(v) for v in row] for row in self.sketches],
            "complete": self.complete,
        }


class TrajectoryRecorder:
    """Keep the parameters of a model at fixed fractions of training progress.

    The caller reports progress in ``[0, 1]``; each time progress reaches the next
    fraction a copy of the flattened parameters is stored on the CPU (float32), with its
    sketch. Progress that jumps past several fractions records the current parameters
    once, at the highest fraction passed, because earlier parameters are gone by then.
    Calling :meth:`update` after every optimizer step is cheap: between fractions it
    only compares two numbers.

    Args:
        model: The network being trained (only read).
        fractions: Strictly ascending fractions in ``[0, 1]``. A fraction 0.0 (the
            initial parameters) is recorded at construction.
        sketch_dim: Dimension ``k`` of the random projection of every waypoint (>= 1).
        sketch_seed: Seed of that projection; use one per study.

    Raises:
        InvalidInputError: When ``fractions`` is empty, not strictly ascending, outside
            ``[0, 1]``, or ``sketch_dim < 1``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        sketch_dim: int = 32,
        sketch_seed: int = 0,
    ) -> None:
        fractions = [float(f) for f in fractions]
        if not fractions or fractions != sorted(set(fractions)):
            raise InvalidInputError(
                f"fractions must be a non-empty, strictly ascending sequence, but got {fractions}."
            )
        if fractions[0] < 0 or fractions[-1] > 1:
            raise InvalidInputError(f"fractions must lie in [0, 1], but got {fractions}.")
        if sketch_dim < 1:
            raise InvalidInputError(f"sketch_dim must be >= 1, but got {sketch_dim}.")
        self.model = model
        self.fractions = fractions
        self.sketch_dim = sketch_dim
        self.sketch_seed = sketch_seed
        self.waypoints: dict[float, torch.Tensor] = {}
        self.sketches: dict[float, NDArray[np.float64]] = {}
        self.progress: dict[float, float] = {}
        self._next = 0
        self.update(0.0)

    @property
    def recorded_fractions(self) -> list[float]:
        """Fractions recorded so far, ascending."""
        return sorted(self.waypoints)

    @property
    def complete(self) -> bool:
        """Whether the last configured fraction has been recorded."""
        return self.fractions[-1] in self.waypoints

    def update(self, progress: float) -> bool:
        """Record a waypoint if ``progress`` reached the next fraction.

        Returns:
            Whether a waypoint was recorded.

        Raises:
            InvalidInputError: When ``progress`` is not a number in ``[0, 1]``.
        """
        if not (0.0 <= progress <= 1.0):
            raise InvalidInputError(f"progress must lie in [0, 1], but got {progress}.")
        reached = None
        while (
            self._next < len(self.fractions)
            and progress >= self.fractions[self._next] - _PROGRESS_TOLERANCE
        ):
            reached = self.fractions[self._next]
            self._next += 1
        if reached is None:
            return False
        flat = flatten_parameters(self.model)
        self.waypoints[reached] = flat
        self.sketches[reached] = sketch(flat, self.sketch_dim, self.sketch_seed)
        self.progress[reached] = float(progress)
        return True

    def summary(self, losses: Sequence[float | None] | None = None) -> TrajectorySummary:
        """Summarize the waypoints recorded so far.

        Args:
            losses: Optional probe-set loss per recorded waypoint, in fraction order
                (see :func:`waypoint_losses`).

        Raises:
            InvalidInputError: When ``losses`` has another length than the waypoints.
        """
        summary = summarize_waypoints(self.waypoints, losses, sketches=self.sketches)
        return TrajectorySummary(
            fractions=summary.fractions,
            progress=[self.progress[f] for f in summary.fractions],
            path_length=summary.path_length,
            displacement=summary.displacement,
            tortuosity=summary.tortuosity,
            losses=summary.losses,
            explained_variance=summary.explained_variance,
            sketches=summary.sketches,
            complete=self.complete,
        )


def summarize_waypoints(
    waypoints: dict[float, torch.Tensor],
    losses: Sequence[float | None] | None = None,
    *,
    sketches: dict[float, NDArray[np.float64]] | None = None,
    sketch_dim: int = 32,
    sketch_seed: int = 0,
) -> TrajectorySummary:
    """Summarize a trajectory given as waypoints by fraction (e.g. loaded from a store).

    Args:
        waypoints: Flat parameter vectors of equal length by progress fraction.
        losses: Optional probe-set loss per waypoint, in fraction order.
        sketches: Precomputed sketches by fraction; missing ones are computed with
            ``sketch_dim`` and ``sketch_seed``.
        sketch_dim: Sketch dimension for missing sketches.
        sketch_seed: Sketch seed for missing sketches.

    Raises:
        InvalidInputError: When there are no waypoints or ``losses`` has another length.
    """
    fractions = sorted(waypoints)
    if not fractions:
        raise InvalidInputError("waypoints must hold at least one fraction, but it is empty.")
    if losses is not None and len(losses) != len(fractions):
        raise InvalidInputError(
            f"losses must have one entry per waypoint ({len(fractions)}), but got {len(losses)}."
        )
    points = [waypoints[f] for f in fractions]
    steps = [float((b - a).norm()) for a, b in zip(points, points[1:], strict=False)]
    path_length = float(sum(steps))
    displacement = float((points[-1] - points[0]).norm()) if len(points) > 1 else 0.0
    tortuosity = path_length / displacement if displacement > 0 else math.inf
    known = sketches or {}
    rows = [
        known[f] if f in known else sketch(waypoints[f], sketch_dim, sketch_seed)
        for f in fractions
    ]
    return TrajectorySummary(
        fractions=fractions,
        progress=list(fractions),
        path_length=path_length,
        displacement=displacement,
        tortuosity=tortuosity,
        losses=list(losses) if losses is not None else [None] * len(points),
        explained_variance=_explained_variance(points),
        sketches=[np.asarray(row).round(8).tolist() for row in rows],
        complete=bool(fractions) and fractions[-1] == 1.0,
    )


def waypoint_losses(
    model: torch.nn.Module,
    loss_fn: LossFn,
    probe: ProbeSet,
    waypoints: dict[float, torch.Tensor],
) -> list[float]:
    """Return the probe-set loss at each waypoint, in fraction order.

    The model is evaluated in eval mode with substitute parameters, so it is left as it
    was. Buffers are the model's current ones.

    NOTE: BatchNorm running statistics are the model's current ones at every waypoint,
    which overstates the loss of early waypoints of models with BatchNorm.
    """
    from topselect.landscape import (
        ParameterEvaluator,
        eval_mode,
        parameters_of,
        unflatten_parameters,
    )

    reference = parameters_of(model)
    evaluator = ParameterEvaluator(model, loss_fn, probe)
    with eval_mode(model):
        return [
            evaluator.loss(unflatten_parameters(waypoints[f], reference))
            for f in sorted(waypoints)
        ]


def write_trajectory_artifacts(summary: TrajectorySummary, directory: str | Path) -> list[Path]:
    """Write ``trajectory.json`` and ``trajectory.png`` of a summary into ``directory``.

    The PNG draws the waypoints' sketches in their top-2 principal plane, coloured by
    probe-set loss and labelled by progress fraction.

    Returns:
        The paths written, JSON first.
    """
    from topselect.plots import trajectory_figure

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "trajectory.json"
    json_path.write_text(json.dumps(summary.to_dict(), indent=2, allow_nan=False))
    png_path = directory / "trajectory.png"
    figure = trajectory_figure(summary)
    try:
        figure.savefig(png_path, dpi=100)
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return [json_path, png_path]


def flatten_parameters(model: torch.nn.Module) -> torch.Tensor:
    """Return a float32 CPU copy of all floating-point parameters, concatenated in order."""
    import torch

    parts = [p.detach().reshape(-1) for p in model.parameters() if p.is_floating_point()]
    if not parts:
        return torch.empty(0)
    return torch.cat(parts).to("cpu", torch.float32).clone()


def _explained_variance(points: list[torch.Tensor]) -> list[float]:
    """Return the variance fractions of the top principal directions of the points."""
    if len(points) < 2:
        return []
    import torch

    stacked = torch.stack(points).to(torch.float64)
    if not bool(torch.isfinite(stacked).all()):
        return []  # A diverged run: its principal directions are undefined.
    centred = stacked - stacked.mean(dim=0, keepdim=True)
    gram = centred @ centred.T  # T x T: cheap even when P is large.
    eigenvalues = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0).numpy()
    total = eigenvalues.sum()
    if total <= 0:
        return []
    return [float(v) for v in (eigenvalues[: len(points) - 1] / total).round(8)]


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return float(value)
