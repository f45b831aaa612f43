"""Training trajectories: waypoints at fixed progress fractions, sketches and summaries."""

from topselect.trajectory._recorder import (
    DEFAULT_FRACTIONS,
    TRAJECTORY_SCHEMA_VERSION,
    TrajectoryRecorder,
    TrajectorySummary,
    flatten_parameters,
    summarize_waypoints,
    waypoint_losses,
    write_trajectory_artifacts,
)
from topselect.trajectory._sketch import sketch

__all__ = [
    "DEFAULT_FRACTIONS",
    "TRAJECTORY_SCHEMA_VERSION",
    "TrajectoryRecorder",
    "TrajectorySummary",
    "flatten_parameters",
    "sketch",
    "summarize_waypoints",
    "waypoint_losses",
    "write_trajectory_artifacts",
]
