"""Writing studies and trials to MLflow: one experiment per study, nested runs per trial.

Layout (schema version :data:`SCHEMA_VERSION`):

* experiment: the study name;
* parent run: named after the study, tags ``topselect.role=study`` and
  ``topselect.direction``, params ``topselect.weight`` and ``topselect.score``;
* one nested run per trial: named ``str(trial.number)`` (as optuna-integration's
  ``MLflowCallback`` names them), tag ``mlflow.parentRunId``, ``topselect.role=trial``,
  ``topselect.trial_number``, ``topselect.state``; params are the trial's params and the
  tracker settings (``topselect.<setting>``); metrics ``intermediate_value`` by step,
  ``value`` (``value_<i>`` for several objectives), and every score as
  ``topselect.<score>``; artifacts under ``topselect/``.

Logging never fails a trial: an MLflow error is logged as one warning per logger and the
trial goes on.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topselect.exceptions import TrackingError
from topselect.search import _attrs
from topselect.tracking._uri import enable_sqlite_wal, resolve_tracking_uri, sqlite_path

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

__all__ = ["SCHEMA_VERSION", "StudyLogger"]

_logger = logging.getLogger(__name__)

#: Version of the MLflow layout and of every JSON artifact topselect writes.
SCHEMA_VERSION = 1

ARTIFACT_DIR = "topselect"

#: Seconds during which a StudyLogger skips MLflow after a failed call.
PAUSE_SECONDS = 60

# mlflow.utils.validation caps a batch at 1,000 metrics and 100 params.
_METRICS_PER_BATCH = 1000
_PARAMS_PER_BATCH = 100


class StudyLogger:
    """Write a study and its trials to an MLflow tracking store.

    Logging never stops training. After a failed call the logger skips MLflow for
    :data:`PAUSE_SECONDS` (counting the skipped calls in :attr:`skipped_calls`), so an
    unreachable server costs one bounded timeout, not one per metric. For an HTTP
    tracking URI it also bounds MLflow's HTTP retries through the environment variables
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (2), ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` (1) and
    ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (20 s), unless they are already set.

    Args:
        tracking_uri: MLflow tracking URI; ``$MLFLOW_TRACKING_URI`` or
            ``sqlite:///<cwd>/mlflow.db`` when ``None``.
    """

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self._client: Any = None
        self._warned = False
        self._lock = threading.Lock()
        self._verified_parents: set[str] = set()
        self._paused_until = 0.0
        self.skipped_calls = 0
        if self.tracking_uri.startswith(("http://", "https://")):
            bound_http_retries()

    @property
    def client(self):
        """The ``mlflow.MlflowClient`` bound to :attr:`tracking_uri` (created on first use)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def prepare_study(self, study: optuna.Study, settings: Mapping[str, Any] | None = None) -> str:
        """Create (or find) the study's experiment and parent run, and return the run id.

        The parent run records the ranking settings (the weight and score of the study's
        :class:`~topselect.TopologicalSampler`, else the defaults) and ``settings``.
        The parent run id is stored in the study's ``topselect.mlflow_parent_run_id`` user
        attribute, so later calls and other processes reuse it. Call this once in the
        parent process before starting workers: several processes creating a fresh sqlite
        store at once can corrupt it.

        Raises:
            TrackingError: When the store cannot be reached or written.
        """
        existing = study.user_attrs.get(_attrs.STUDY_PARENT_RUN_ID)
        if existing and self._parent_exists(str(existing)):
            return str(existing)
        try:
            experiment_id = self._experiment_id(study.study_name)
            enable_sqlite_wal(self.tracking_uri)
            tags = {
                "topselect.role": "study",
                "topselect.study_name": study.study_name,
                "topselect.schema_version": str(SCHEMA_VERSION),
                "topselect.direction": "/".join(d.name.lower() for d in study.directions),
            }
            run = self.client.create_run(experiment_id, tags=tags, run_name=study.study_name)
            params = {f"topselect.{k}": v for k, v in _ranking_settings(study).items()}
            params.update({f"topselect.{k}": v for k, v in (settings or {}).items()})
            self._log_params(run.info.run_id, params)
        except Exception as error:  # MLflow raises many types; all mean the store failed.
            raise TrackingError(
                f"could not prepare MLflow run for study {study.study_name!r} at "
                f"{self.tracking_uri}: {error}"
            ) from error
        study.set_user_attr(_attrs.STUDY_PARENT_RUN_ID, run.info.run_id)
        self._verified_parents.add(run.info.run_id)
        return run.info.run_id

    def _parent_exists(self, run_id: str) -> bool:
        """Return whether ``run_id`` is a run of this store (checked once per logger)."""
        if run_id in self._verified_parents:
            return True
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise TrackingError(
                    f"could not read the study run {run_id} at {self.tracking_uri}: {error}"
                ) from error
            _logger.warning(
                "The study's MLflow run %s is not in %s (the store moved or was deleted); "
                "creating a new study run there.",
                run_id,
                self.tracking_uri,
            )
            return False
        self._verified_parents.add(run_id)
        return True

    def _experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(
                name, artifact_location=self._artifact_location(name)
            )
        except Exception:
            # Another process created it between the lookup and the create.
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _artifact_location(self, name: str) -> str | None:
        """Return ``<store folder>/mlartifacts/<name>`` for a sqlite store, else ``None``.

        With a sqlite store MLflow puts a new experiment's artifacts under the process's
        working directory (``./mlruns``), wherever the store is. Keeping them beside the
        store keeps the two together.
        """
        path = sqlite_path(self.tracking_uri)
        if path is None:
            return None
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "experiment"
        return (path.resolve().parent / "mlartifacts" / safe).as_uri()

    def finish_study(self, study: optuna.Study) -> None:
        """Tag the study's parent run with trial counts by state and end it ``FINISHED``.

        Does nothing when the study has no parent run. A later :meth:`prepare_study` of
        the same study reuses the run.
        """
        run_id = study.user_attrs.get(_attrs.STUDY_PARENT_RUN_ID)
        if not run_id:
            return
        counts: dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        self.set_tags(run_id, {f"topselect.trials_{k.lower()}": v for k, v in counts.items()})
        self.end_run(run_id, "FINISHED")

    def start_trial(self, study: optuna.Study, trial: optuna.trial.BaseTrial) -> str | None:
        """Create the trial's nested run and return its id (``None`` if MLflow failed)."""
        existing = trial.user_attrs.get(_attrs.MLFLOW_RUN_ID)
        if existing:
            return str(existing)

        def create() -> str:
            parent = self.prepare_study(study)
            experiment_id = self.client.get_run(parent).info.experiment_id
            tags = {
                "mlflow.parentRunId": parent,
                "topselect.role": "trial",
                "topselect.trial_number": str(trial.number),
                "topselect.study_name": study.study_name,
                "topselect.schema_version": str(SCHEMA_VERSION),
                "topselect.state": "RUNNING",
            }
            run = self.client.create_run(experiment_id, tags=tags, run_name=str(trial.number))
            return run.info.run_id

        return self._safely("start the trial run", create)

    def log_metrics(
        self, run_id: str | None, metrics: Mapping[str, float | None], step: int = 0
    ) -> None:
        """Log finite metrics at ``step``; ``None`` and non-finite values are skipped."""
        if run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, step)
            for key, value in metrics.items()
            if value is not None and _is_finite(value)
        ]

        def send() -> None:
            for start in range(0, len(batch), _METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=batch[start : start + _METRICS_PER_BATCH])

        self._safely("log metrics", send)

    def log_params(self, run_id: str | None, params: Mapping[str, Any]) -> None:
        """Log params as strings (MLflow truncates values over 6,000 characters)."""
        if run_id is not None:
            self._safely("log params", lambda: self._log_params(run_id, params))

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)) for k, v in params.items()]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + _PARAMS_PER_BATCH])

    def set_tags(self, run_id: str | None, tags: Mapping[str, Any]) -> None:
        """Set tags (values converted to strings)."""
        if run_id is None:
            return
        from mlflow.entities import RunTag

        items = [RunTag(str(k), "" if v is None else str(v)) for k, v in tags.items()]
        self._safely("set tags", lambda: self.client.log_batch(run_id, tags=items))

    def log_artifacts(
        self,
        run_id: str | None,
        json_files: Mapping[str, Any] | None = None,
        figures: Mapping[str, Figure] | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        """Upload artifacts under ``topselect/`` in one call.

        Args:
            json_files: File name to JSON-safe object; written with ``allow_nan=False`` so
                every file is standard JSON.
            figures: File name to matplotlib figure, saved as PNG and then closed.
            files: File name to raw bytes (NPZ, CSV, ...).
        """
        import matplotlib.pyplot as plt

        if run_id is None:
            for figure in (figures or {}).values():
                plt.close(figure)
            return
        with tempfile.TemporaryDirectory(prefix="topselect-") as tmp:
            folder = Path(tmp) / ARTIFACT_DIR
            folder.mkdir()
            for name, obj in (json_files or {}).items():
                text = json.dumps(obj, allow_nan=False, indent=1)
                (folder / name).write_text(text, encoding="utf-8")
            for name, figure in (figures or {}).items():
                figure.savefig(folder / name, dpi=110, bbox_inches="tight")
                plt.close(figure)
            for name, data in (files or {}).items():
                (folder / name).write_bytes(data)
            self._safely(
                "upload artifacts",
                lambda: self.client.log_artifacts(run_id, str(folder), artifact_path=ARTIFACT_DIR),
            )

    def end_run(self, run_id: str | None, status: str) -> None:
        """End a run with an MLflow status (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        if run_id is not None:
            self._safely("end the run", lambda: self.client.set_terminated(run_id, status))

    def _safely(self, action: str, call):
        with self._lock:
            if time.monotonic() < self._paused_until:
                self.skipped_calls += 1
                _logger.debug("Skipped MLflow call to %s: paused after a failure.", action)
                return None
        try:
            return call()
        except Exception as error:  # MLflow raises many types; none may stop training.
            with self._lock:
                first, self._warned = not self._warned, True
                self._paused_until = time.monotonic() + PAUSE_SECONDS
            if first:
                # NOTE: skipped calls are not spooled for a later upload yet, so their
                # metrics and artifacts are missing from MLflow.
                _logger.warning(
                    "MLflow failed to %s at %s (%s: %s); training goes on without it, and "
                    "MLflow calls are skipped for %d s. Later failures are logged at DEBUG "
                    "level.",
                    action,
                    self.tracking_uri,
                    type(error).__name__,
                    error,
                    PAUSE_SECONDS,
                )
            else:
                _logger.debug("MLflow failed to %s: %s", action, error)
            return None


def bound_http_retries(max_retries: int = 2, timeout_seconds: int = 20) -> None:
    """Bound MLflow's HTTP retries and timeout, unless the user already set them.

    MLflow retries HTTP calls 7 times with exponential backoff by default: a call to a
    closed port on 127.0.0.1 took about 250 s to fail here (MLflow 3.17).

    Args:
        max_retries: Value for ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``.
        timeout_seconds: Value for ``MLFLOW_HTTP_REQUEST_TIMEOUT``, per request.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_seconds))


def _ranking_settings(study: optuna.Study) -> dict[str, Any]:
    """Return the weight and score ``compare`` must rank with to match the study's sampler."""
    from topselect.search._ranking import DEFAULT_SCORE, DEFAULT_WEIGHT

    sampler = study.sampler
    return {
        "weight": getattr(sampler, "weight", DEFAULT_WEIGHT),
        "score": getattr(sampler, "score", DEFAULT_SCORE),
    }


def _is_finite(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return number == number and number not in (float("inf"), float("-inf"))
