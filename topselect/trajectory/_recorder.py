"""Waypoints of a training run at fixed fractions of its progress, and their summary."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from topselect.exceptions import InvalidInputError
from topselect.trajectory._sketch import sketch

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_FRACTIONS", "TrajectoryRecorder", "TrajectorySummary"]

_logger = logging.getLogger(__name__)

#: Nine waypoints from the initial parameters (0.0) to the end of training (1.0).
DEFAULT_FRACTIONS: tuple[float, ...] = tuple(i / 8 for i in range(9))

#: Version of the dictionary layout returned by :meth:`TrajectorySummary.to_dict`.
TRAJECTORY_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TrajectorySummary:
    """Shape of a recorded trajectory.

    Attributes:
        fractions: Progress fractions of the recorded waypoints, ascending.
        path_length: Sum of Euclidean distances between consecutive waypoints.
        displacement: Euclidean distance from the first to the last waypoint.
        tortuosity: ``path_length / displacement`` (>= 1; ``inf`` if displacement is 0).
        losses: Probe-set loss at each waypoint, or ``None`` where not evaluated.
        explained_variance: Fraction of the waypoints' variance along each of their top
            principal directions (at most ``len(fractions) - 1`` entries).
        sketches: ``(len(fractions), k)`` seeded projections of the waypoints.
        complete: Whether the final waypoint (fraction 1.0) was recorded.
    """

    fractions: list[float]
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
            "path_length": _finite_or_none(self.path_length),
            "displacement": _finite_or_none(self.displacement),
            "tortuosity": _finite_or_none(self.tortuosity),
            "losses": [_finite_or_none(v) for v in self.losses],
            "explained_variance": self.explained_variance,
            "sketches": self.sketches,
            "complete": self.complete,
        }


class TrajectoryRecorder:
    """Keep the parameters of a model at fixed fractions of training progress.

    The caller reports progress in ``[0, 1]``; each time progress reaches the next
    fraction a copy of the flattened parameters is stored on the CPU (float32). Progress
    that jumps past several fractions records the current parameters once, at the
    highest fraction passed, because earlier parameters are gone by then.

    Args:
        model: The network being trained.
        fractions: Ascending fractions in ``[0, 1]``. ``0.0`` is recorded at construction.
        sketch_dim: Dimension of the random projection of every waypoint.
        sketch_seed: Seed of that projection; use one per study.

    Raises:
        InvalidInputError: When ``fractions`` is empty, unsorted or outside ``[0, 1]``.
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
        self.model = model
        self.fractions = fractions
        self.sketch_dim = sketch_dim
        self.sketch_seed = sketch_seed
        self.waypoints: dict[float, torch.Tensor] = {}
        self._next = 0
        self.update(0.0)

    @property
    def recorded_fractions(self) -> list[float]:
        """Fractions recorded so far, ascending."""
        return sorted(self.waypoints)

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
        while self._next < len(self.fractions) and progress >= self.fractions[self._next] - 1e-12:
            reached = self.fractions[self._next]
            self._next += 1
        if reached is None:
            return False
        self.waypoints[reached] = flatten_parameters(self.model)
        return True

    def summary(self, losses: Sequence[float | None] | None = None) -> TrajectorySummary:
        """Summarize the waypoints recorded so far.

        Args:
            losses: Optional probe-set loss per recorded waypoint, in fraction order.
        """
        fractions = self.recorded_fractions
        points = [self.waypoints[f] for f in fractions]
        steps = [float((b - a).norm()) for a, b in zip(points, points[1:], strict=False)]
        path_length = float(sum(steps))
        displacement = float((points[-1] - points[0]).norm()) if len(points) > 1 else 0.0
        tortuosity = path_length / displacement if displacement > 0 else float("inf")
        if losses is None:
            losses = [None] * len(points)
        return TrajectorySummary(
            fractions=fractions,
            path_length=path_length,
            displacement=displacement,
            tortuosity=tortuosity,
            losses=list(losses),
            explained_variance=_explained_variance(points),
            sketches=[
                sketch(p, self.sketch_dim, self.sketch_seed).round(8).tolist() for p in points
            ],
            complete=bool(fractions) and fractions[-1] == self.fractions[-1],
        )


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


def stack_waypoints(waypoints: dict[float, torch.Tensor]) -> NDArray[np.float32]:
    """Return the waypoints as a ``(T, P)`` float32 array in fraction order."""
    return np.stack([waypoints[f].numpy() for f in sorted(waypoints)])
