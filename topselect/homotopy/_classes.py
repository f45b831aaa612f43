"""Homotopy classes of training trajectories, built against one representative per class."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from topselect.homotopy._barrier import loss_barrier
from topselect.landscape import LossFn, ProbeSet

if TYPE_CHECKING:
    import torch

__all__ = [
    "ClassDecision",
    "Representative",
    "architecture_signature",
    "assign_class",
    "witness_homotopy",
]

_logger = logging.getLogger(__name__)


def architecture_signature(model: torch.nn.Module) -> str:
    """Return 12 hex digits identifying the model's parameter names, shapes and dtypes.

    Trajectories of models with different signatures are never compared.
    """
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Representative:
    """The trial that founded a class, with what membership tests need from it."""

    class_id: str
    trial_number: int
    sketches: dict[float, np.ndarray]
    waypoints_ref: str


@dataclass(frozen=True)
class ClassDecision:
    """Outcome of a membership search.

    Attributes:
        class_id: The class joined, or ``None`` when no representative was witnessed.
        barriers: Maximum barrier over shared fractions against each representative
            tested, by class id, in loss units.
        tests: Number of barrier evaluations (one per shared waypoint fraction).
    """

    class_id: str | None
    barriers: dict[str, float] = field(default_factory=dict)
    tests: int = 0


def witness_homotopy(
    model: torch.nn.Module,
    loss_fn: LossFn,
    probe: ProbeSet,
    waypoints_a: dict[float, torch.Tensor],
    waypoints_b: dict[float, torch.Tensor],
    epsilon: float,
    n_points: int = 11,
) -> tuple[bool, float, int]:
    """Test whether two trajectories are epsilon-homotopic on their shared fractions.

    The straight-line homotopy between the two paths is witnessed when the loss barrier
    between their waypoints at every shared progress fraction is at most ``epsilon``. A
    negative result means "not witnessed", not "proved different". The test stops at the
    first fraction whose barrier exceeds ``epsilon``.

    Returns:
        ``(witnessed, max_barrier, tests)``; ``max_barrier`` is ``inf`` when no fraction
        is shared.
    """
    shared = sorted(set(waypoints_a) & set(waypoints_b))
    worst, tests = -np.inf, 0
    for fraction in reversed(shared):  # Late waypoints separate runs most often.
        result = loss_barrier(
            model, loss_fn, probe, waypoints_a[fraction], waypoints_b[fraction], n_points=n_points
        )
        tests += 1
        worst = max(worst, result.barrier)
        if result.barrier > epsilon:
            return False, float(worst), tests
    if not shared:
        return False, float("inf"), 0
    return True, float(worst), tests


def assign_class(
    model: torch.nn.Module,
    loss_fn: LossFn,
    probe: ProbeSet,
    waypoints: dict[float, torch.Tensor],
    sketches: dict[float, np.ndarray],
    representatives: Sequence[Representative],
    load_waypoints,
    *,
    epsilon: float,
    max_candidates: int = 3,
) -> ClassDecision:
    """Find the class of a trajectory by membership against class representatives.

    Representatives are tried in order of the distance between their sketch and the
    trajectory's sketch, both at the trajectory's last recorded fraction. At most
    ``max_candidates`` are tested, so the cost does not grow with the number of trials.
    Only the fractions the trajectory has recorded are compared, which lets a running
    trial be placed on its prefix. Ties in distance are broken by class id, so every
    worker tests in the same order.

    Args:
        waypoints: The trajectory's waypoints by progress fraction (flat tensors).
        sketches: The trajectory's sketches by fraction.
        representatives: One representative per known class of the same architecture.
        load_waypoints: ``load_waypoints(reference)`` returning a representative's waypoints.
        epsilon: Largest barrier (loss units) still counted as homotopic.
        max_candidates: Representatives tested at most.
    """
    last = max(sketches)

    def distance(rep: Representative) -> float:
        if last not in rep.sketches:
            return float("inf")
        return float(np.linalg.norm(rep.sketches[last] - sketches[last]))

    ordered = sorted(representatives, key=lambda r: (distance(r), r.class_id))
    barriers: dict[str, float] = {}
    total_tests = 0
    for rep in ordered[:max_candidates]:
        rep_waypoints = load_waypoints(rep.waypoints_ref)
        witnessed, worst, tests = witness_homotopy(
            model, loss_fn, probe, waypoints, rep_waypoints, epsilon
        )
        barriers[rep.class_id] = worst
        total_tests += tests
        if witnessed:
            return ClassDecision(rep.class_id, barriers, total_tests)
    return ClassDecision(None, barriers, total_tests)
