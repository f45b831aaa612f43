"""Loss barriers and homotopy classes of training trajectories."""

from topselect.homotopy._barrier import BarrierResult, loss_barrier
from topselect.homotopy._classes import (
    ClassDecision,
    Representative,
    architecture_signature,
    assign_class,
    witness_homotopy,
)
from topselect.homotopy._store import LocalWaypointStore, MlflowWaypointStore, WaypointStore

__all__ = [
    "BarrierResult",
    "ClassDecision",
    "LocalWaypointStore",
    "MlflowWaypointStore",
    "Representative",
    "WaypointStore",
    "architecture_signature",
    "assign_class",
    "loss_barrier",
    "witness_homotopy",
]
