"""Names and encoding of the trial attributes topselect writes to Optuna storage.

Every value is JSON-safe (plain ``bool``, ``int``, ``float``, ``str``, ``None``, lists and
dicts of those), because RDB and journal storages serialize attributes with
``json.dumps`` and reject numpy scalars and arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

PREFIX = "topselect."

#: dict of flatness scores (see ``topselect.topology.flatness_scores``).
SCORES = PREFIX + "scores"
#: dict of flatness scores of the slice through the trajectory's plane.
PLANE_SCORES = PREFIX + "plane_scores"
#: dict of sharpness baselines and their costs in seconds (``<name>_seconds``).
BASELINES = PREFIX + "baselines"
#: Whether the final probe-set loss reached the fitted threshold.
FITTED = PREFIX + "fitted"
#: Probe-set loss at the trained parameters.
TRAIN_LOSS = PREFIX + "train_loss"
#: Homotopy class id, or ``None`` when not placed.
CLASS_ID = PREFIX + "class_id"
#: Whether ``CLASS_ID`` was decided on the full trajectory (``False``: on a prefix).
CLASS_FINAL = PREFIX + "class_final"
#: Whether the trial founded its class and serves as its representative.
REPRESENTATIVE = PREFIX + "class_representative"
#: Reference to the representative's stored waypoints.
WAYPOINTS_REF = PREFIX + "waypoints_ref"
#: Waypoint sketches: maps a progress fraction (as text) to a list of floats.
SKETCHES = PREFIX + "sketches"
#: Largest barrier against each representative tested, by class id.
CLASS_BARRIERS = PREFIX + "class_barriers"
#: Progress fractions on which ``CLASS_ID`` was witnessed (as text, ascending).
CLASS_FRACTIONS = PREFIX + "class_fractions"
#: Pairs ``[class_id, class_id]`` this trial found to be one class.
CLASS_MERGES = PREFIX + "class_merges"
#: Trajectory pairs and segments this trial's class searches tested, summed.
CLASS_PAIR_TESTS = PREFIX + "class_pair_tests"
CLASS_BARRIER_EVALUATIONS = PREFIX + "class_barrier_evaluations"
#: Size in bytes of the stored waypoints of a representative.
WAYPOINTS_BYTES = PREFIX + "waypoints_bytes"
#: Architecture signature (see ``topselect.homotopy.architecture_signature``).
ARCHITECTURE = PREFIX + "architecture"
#: Fingerprint of the probe set.
PROBE_FINGERPRINT = PREFIX + "probe_fingerprint"
#: MLflow run id of the trial's nested run.
MLFLOW_RUN_ID = PREFIX + "mlflow_run_id"
#: Reason TopologicalPruner gave for pruning the trial.
PRUNE_REASON = PREFIX + "prune_reason"
#: Message of an analysis step that failed without failing the trial.
ANALYSIS_ERROR = PREFIX + "analysis_error"
#: Study user attribute holding the MLflow parent run id.
STUDY_PARENT_RUN_ID = PREFIX + "mlflow_parent_run_id"


def json_safe(value: Any) -> Any:
    """Convert ``value`` to plain JSON types; non-finite floats become ``None``."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    raise TypeError(
        f"{type(value).__name__} value {value!r} cannot be stored as a trial attribute."
    )
