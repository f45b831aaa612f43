"""MLflow layout: writing studies and trials, spooling failed writes, and reading runs back."""

from topselect.tracking._artifacts import (
    ALLOWED_SUFFIXES,
    SCHEMA_VERSION,
    ArtifactError,
    diagram_from_json,
    diagram_to_json,
)
from topselect.tracking._functional import (
    ProbeOutputs,
    decode_probe_outputs,
    encode_probe_outputs,
    linear_cka,
    prediction_agreement,
    record_probe_outputs,
)
from topselect.tracking._reader import (
    RunSelection,
    StudyRuns,
    find_experiment,
    load_runs,
    load_study_runs,
)
from topselect.tracking._spool import Spool, SyncResult, default_spool_dir
from topselect.tracking._study_report import class_table, study_artifacts
from topselect.tracking._uri import default_tracking_uri, enable_sqlite_wal, resolve_tracking_uri
from topselect.tracking._writer import ARTIFACT_DIR, StudyLogger

__all__ = [
    "ALLOWED_SUFFIXES",
    "ARTIFACT_DIR",
    "SCHEMA_VERSION",
    "ArtifactError",
    "ProbeOutputs",
    "RunSelection",
    "Spool",
    "StudyLogger",
    "StudyRuns",
    "SyncResult",
    "class_table",
    "decode_probe_outputs",
    "default_spool_dir",
    "default_tracking_uri",
    "diagram_from_json",
    "diagram_to_json",
    "enable_sqlite_wal",
    "encode_probe_outputs",
    "find_experiment",
    "linear_cka",
    "load_runs",
    "load_study_runs",
    "prediction_agreement",
    "record_probe_outputs",
    "resolve_tracking_uri",
    "study_artifacts",
]
