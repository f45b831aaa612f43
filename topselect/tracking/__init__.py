"""MLflow layout: writing studies and trials, and reading them back."""

from topselect.tracking._artifacts import diagram_from_json, diagram_to_json
from topselect.tracking._reader import StudyRuns, find_experiment, load_study_runs
from topselect.tracking._uri import default_tracking_uri, enable_sqlite_wal, resolve_tracking_uri
from topselect.tracking._writer import ARTIFACT_DIR, SCHEMA_VERSION, StudyLogger

__all__ = [
    "ARTIFACT_DIR",
    "SCHEMA_VERSION",
    "StudyLogger",
    "StudyRuns",
    "default_tracking_uri",
    "diagram_from_json",
    "diagram_to_json",
    "enable_sqlite_wal",
    "find_experiment",
    "load_study_runs",
    "resolve_tracking_uri",
]
