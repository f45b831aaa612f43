"""Loss barriers, homotopy classes of training trajectories, and waypoint storage."""

from topselect.homotopy._all_pairs import (
    LinkedClasses,
    PairwiseBarriers,
    all_pairs_classes,
    pairwise_barriers,
    single_linkage_classes,
)
from topselect.homotopy._barrier import (
    BarrierResult,
    BarrierStrategy,
    SegmentEvaluator,
    loss_barrier,
)
from topselect.homotopy._classes import (
    ClassDecision,
    HomotopyTester,
    Representative,
    WitnessResult,
    architecture_signature,
    assign_class,
    witness_homotopy,
)
from topselect.homotopy._registry import ClassMode, ClassRegistry, resolve_classes
from topselect.homotopy._store import (
    LocalWaypointStore,
    MlflowWaypointStore,
    StoredWaypoints,
    WaypointDtype,
    WaypointStore,
    decode_waypoints,
    encode_waypoints,
)

__all__ = [
    "BarrierResult",
    "BarrierStrategy",
    "ClassDecision",
    "ClassMode",
    "ClassRegistry",
    "HomotopyTester",
    "LinkedClasses",
    "LocalWaypointStore",
    "MlflowWaypointStore",
    "PairwiseBarriers",
    "Representative",
    "SegmentEvaluator",
    "StoredWaypoints",
    "WaypointDtype",
    "WaypointStore",
    "WitnessResult",
    "all_pairs_classes",
    "architecture_signature",
    "assign_class",
    "decode_waypoints",
    "encode_waypoints",
    "loss_barrier",
    "pairwise_barriers",
    "resolve_classes",
    "single_linkage_classes",
    "witness_homotopy",
]
