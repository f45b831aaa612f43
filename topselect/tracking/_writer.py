"""Writing studies and trials to MLflow: one experiment per study, nested runs per trial.

Layout (schema version :data:`SCHEMA_VERSION`, described in full in docs/mlflow-layout.md):

* experiment: the study name;
* parent run: named after the study, tags ``topselect.role=study`` and
  ``topselect.direction``, params ``topselect.weight`` and ``topselect.score``, and the
  study-level artifacts that :meth:`StudyLogger.finish_study` writes;
* one nested run per trial: named ``str(trial.number)`` and tagged ``number`` and
  ``direction`` as optuna-integration's ``MLflowCallback`` does, tag
  ``mlflow.parentRunId``, ``topselect.role=trial``, ``topselect.trial_number``,
  ``topselect.state``; params are the trial's params and the tracker settings; metrics
  ``intermediate_value`` by step, ``value`` and every score as ``topselect.<score>``;
  artifacts under ``topselect/``.

Writes are buffered per run and sent with ``log_batch``. Logging never fails a trial:
when the store cannot be reached, writes go to a local spool (see
:mod:`topselect.tracking._spool`) and are uploaded later.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topselect.exceptions import TrackingError
from topselect.search import _attrs
from topselect.tracking._artifacts import (
    SCHEMA_VERSION,
    check_artifact_name,
    png_bytes,
)
from topselect.tracking._spool import (
    PENDING_PREFIX,
    Spool,
    SyncResult,
    default_spool_dir,
    new_pending_id,
)
from topselect.tracking._uri import enable_sqlite_wal, resolve_tracking_uri, sqlite_path

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

__all__ = ["ARTIFACT_DIR", "SCHEMA_VERSION", "StudyLogger", "bound_http_retries"]

_logger = logging.getLogger(__name__)

ARTIFACT_DIR = "topselect"

#: System attribute in which optuna-integration's ``MLflowCallback`` keeps a trial's run id.
CALLBACK_RUN_ID_ATTR = "mlflow_run_id"

# mlflow.utils.validation (MLflow 3.17) caps one log_batch at 1,000 metrics, 100 params,
# 100 tags and 1,000 items in all.
_MAX_METRICS = 1000
_MAX_PARAMS = 100
_MAX_TAGS = 100
_MAX_ITEMS = 1000


@dataclass
class _Buffer:
    """Writes to one run that wait for the next ``log_batch``."""

    started: float = field(default_factory=time.monotonic)
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.metrics) + len(self.params) + len(self.tags)


class StudyLogger:
    """Write a study and its trials to an MLflow tracking store.

    Metrics, params and tags are buffered per run and sent in one ``log_batch`` when the
    run's buffer is ``flush_seconds`` old or contains 1,000 items, before its artifacts are
    uploaded, and when the run ends; call :meth:`flush` to send them at once.

    Logging never stops training. When a call fails (an unreachable server, a locked
    store), the logger logs one warning and writes that call and every later one to a
    spool directory instead, for ``retry_seconds``. The first call after that interval
    uploads the spool, and on success goes on writing to the store directly;
    :meth:`sync` and ``topselect sync`` upload a spool at any time. A run that could not
    be created gets a placeholder id starting with ``pending-``; its run is created when
    the spool is uploaded and tagged ``topselect.pending_run_id`` with the placeholder.

    For an HTTP tracking URI the logger bounds MLflow's HTTP retries through the
    environment variables ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (2),
    ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` (1) and ``MLFLOW_HTTP_REQUEST_TIMEOUT``
    (20 s), unless they are already set. A call then waits at most 3 x 20 s plus 2 s of
    backoff for a server that accepts connections and never responds, and about 2 s
    for a closed port.

    Args:
        tracking_uri: MLflow tracking URI; ``$MLFLOW_TRACKING_URI`` or
            ``sqlite:///<cwd>/mlflow.db`` when ``None``.
        spool_dir: Where writes go while the store is unreachable;
            ``$TOPSELECT_SPOOL_DIR`` or ``~/.cache/topselect/spool`` when ``None``.
        flush_seconds: Maximum time, in seconds, a buffered write waits before it is
            sent (checked whenever the run is written to).
        retry_seconds: Time, in seconds, after a failure during which writes go
            straight to the spool.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        spool_dir: str | Path | None = None,
        flush_seconds: float = 10.0,
        retry_seconds: float = 60.0,
    ) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.spool = Spool(spool_dir or default_spool_dir(), self.tracking_uri)
        self.flush_seconds = float(flush_seconds)
        self.retry_seconds = float(retry_seconds)
        #: Writes that went to the spool instead of the store.
        self.spooled_operations = 0
        self._client: Any = None
        self._warned = False
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._buffers: dict[str, _Buffer] = {}
        self._ended: set[str] = set()
        self._resolved: dict[str, str] = {}
        self._verified_parents: set[str] = set()
        self._experiment_ids: dict[str, str] = {}
        self._paused_until = 0.0
        if self.tracking_uri.startswith(("http://", "https://")):
            bound_http_retries()

    @property
    def client(self):
        """The ``mlflow.MlflowClient`` bound to :attr:`tracking_uri` (created on first use)."""
        if self._client is None:
            from topselect.tracking._uri import mlflow_client

            self._client = mlflow_client(self.tracking_uri)
        return self._client

    @property
    def spool_dir(self) -> Path:
        """Directory of the writes the store did not accept yet."""
        return self.spool.directory

    @staticmethod
    def is_pending(run_id: str | None) -> bool:
        """Return whether ``run_id`` is a placeholder for a run not created yet."""
        return bool(run_id) and str(run_id).startswith(PENDING_PREFIX)

    # -- study ---------------------------------------------------------------------------

    def prepare_study(self, study: optuna.Study, settings: Mapping[str, Any] | None = None) -> str:
        """Create (or find) the study's experiment and parent run, and return the run id.

        Call this once in the parent process before starting workers: it creates the
        store (a fresh sqlite store is migrated here, once), switches a sqlite store to
        write-ahead logging, and creates the experiment and the parent run. Several
        processes creating a fresh sqlite store at once can corrupt it.

        The parent run records the ranking settings (the weight and score of the
        study's :class:`~topselect.TopologicalSampler`, else the defaults) and
        ``settings``. Its id is stored in the study's ``topselect.mlflow_parent_run_id``
        user attribute, so later calls and other processes reuse it.

        Raises:
            TrackingError: When the store cannot be reached or written. The parent run is
                never spooled, so that a study does not start against a store it cannot
                reach.
        """
        existing = study.user_attrs.get(_attrs.STUDY_PARENT_RUN_ID)
        if existing and self._parent_exists(str(existing)):
            return str(existing)
        try:
            experiment_id = self._experiment_id(study.study_name)
            enable_sqlite_wal(self.tracking_uri)
            run = self.client.create_run(
                experiment_id, tags=_study_tags(study), run_name=study.study_name
            )
            params = {f"topselect.{k}": v for k, v in _ranking_settings(study).items()}
            params.update({f"topselect.{k}": v for k, v in (settings or {}).items()})
            self._send_batch(run.info.run_id, _Buffer(params=_strings(params)))
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
        cached = self._experiment_ids.get(name)
        if cached is not None:
            return cached
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = self.client.create_experiment(
                    name, artifact_location=self._artifact_location(name)
                )
            except Exception:
                # Another process created it between the lookup and the create.
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        self._experiment_ids[name] = experiment_id
        return experiment_id

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
        """Write the study-level artifacts, tag trial counts and end the parent run.

        The artifacts (``ranking.json``, ``ranking.csv``, ``classes.json``,
        ``classes.csv``, ``selection_report.json``; see
        :func:`topselect.tracking.study_artifacts`) go under ``topselect/`` of the
        parent run, which then ends ``FINISHED``. Every buffered write is flushed and the
        spool is uploaded first, when the store is reachable. Does nothing when the study
        has no parent run. A later :meth:`prepare_study` of the same study reuses the run.
        """
        from topselect.tracking._study_report import study_artifacts

        run_id = study.user_attrs.get(_attrs.STUDY_PARENT_RUN_ID)
        if not run_id:
            return
        self.flush()
        counts: dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        self.set_tags(run_id, {f"topselect.trials_{k.lower()}": v for k, v in counts.items()})
        try:
            json_files, files = study_artifacts(study)
        except Exception as error:  # A report failure must not lose the run's end.
            _logger.warning("Could not build the study-level artifacts: %s", error)
            json_files, files = {}, {}
        self.log_artifacts(run_id, json_files=json_files, files=files)
        self.end_run(run_id, "FINISHED")
        if self.spool.keys():
            self.sync()

    # -- trials --------------------------------------------------------------------------

    def start_trial(self, study: optuna.Study, trial: optuna.trial.BaseTrial) -> str | None:
        """Create the trial's nested run and return its id.

        A run id the trial already carries is reused: topselect's own
        (``topselect.mlflow_run_id`` user attribute), or the one optuna-integration's
        ``MLflowCallback`` stores in the ``mlflow_run_id`` system attribute. A run
        topselect creates is written to that system attribute, so a ``MLflowCallback``
        in the same study logs into it instead of creating a second run.

        Returns:
            The run id; a ``pending-`` placeholder when the store could not be reached
            (the creation is spooled); ``None`` only when even the spool failed.
        """
        existing = trial.user_attrs.get(_attrs.MLFLOW_RUN_ID)
        if existing:
            return str(existing)
        adopted = _callback_run_id(trial)
        parent = study.user_attrs.get(_attrs.STUDY_PARENT_RUN_ID)
        tags = _trial_tags(study, trial, parent)
        if adopted:
            self.set_tags(adopted, tags)
            return adopted
        op: dict[str, Any] = {
            "op": "create_run",
            "experiment": study.study_name,
            "study_name": study.study_name,
            "run_name": str(trial.number),
            "tags": tags,
            "start_time": _now_ms(),
        }
        run_id = self._deliver_create(op, study)
        if run_id is not None and not self.is_pending(run_id):
            _set_callback_run_id(trial, run_id)
        return run_id

    def _deliver_create(self, op: dict[str, Any], study: optuna.Study) -> str | None:
        if not self._should_spool():
            try:
                if not op["tags"].get("mlflow.parentRunId"):
                    op["tags"]["mlflow.parentRunId"] = self.prepare_study(study)
                return self._create_run(op)
            except Exception as error:  # MLflow raises many types; none may stop training.
                self._on_failure("start the trial run", error)
        pending = new_pending_id()
        op["tags"]["topselect.pending_run_id"] = pending
        return pending if self._spool_op(pending, op) else None

    def _create_run(self, op: Mapping[str, Any]) -> str:
        tags = dict(op["tags"])
        if not tags.get("mlflow.parentRunId"):
            tags["mlflow.parentRunId"] = self._find_or_create_parent(op["study_name"])
        run = self.client.create_run(
            self._experiment_id(op["experiment"]),
            start_time=op.get("start_time"),
            tags=tags,
            run_name=op["run_name"],
        )
        return run.info.run_id

    def _find_or_create_parent(self, study_name: str) -> str:
        experiment_id = self._experiment_id(study_name)
        parents = self.client.search_runs(
            [experiment_id],
            filter_string=(
                "tags.`topselect.role` = 'study' AND "
                f"tags.`topselect.study_name` = '{_quote(study_name)}'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if parents:
            return parents[0].info.run_id
        tags = {
            "topselect.role": "study",
            "topselect.study_name": study_name,
            "topselect.schema_version": str(SCHEMA_VERSION),
        }
        return self.client.create_run(experiment_id, tags=tags, run_name=study_name).info.run_id

    # -- writes --------------------------------------------------------------------------

    def log_metrics(
        self, run_id: str | None, metrics: Mapping[str, float | None], step: int = 0
    ) -> None:
        """Log finite metrics at ``step``; ``None`` and non-finite values are skipped."""
        if run_id is None:
            return
        now = _now_ms()
        items = [
            (str(key), float(value), now, int(step))
            for key, value in metrics.items()
            if value is not None and _is_finite(value)
        ]
        self._buffer(run_id, lambda buffer: buffer.metrics.extend(items))

    def log_params(self, run_id: str | None, params: Mapping[str, Any]) -> None:
        """Log params as strings (MLflow truncates values over 6,000 characters)."""
        if run_id is not None:
            self._buffer(run_id, lambda buffer: buffer.params.update(_strings(params)))

    def set_tags(self, run_id: str | None, tags: Mapping[str, Any]) -> None:
        """Set tags (values converted to strings, ``None`` to an empty string)."""
        if run_id is not None:
            self._buffer(run_id, lambda buffer: buffer.tags.update(_strings(tags)))

    def log_artifacts(
        self,
        run_id: str | None,
        json_files: Mapping[str, Any] | None = None,
        figures: Mapping[str, Figure] | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        """Upload artifacts under ``topselect/`` in one call, after the run's buffered writes.

        Args:
            json_files: File name to JSON-safe object; written with ``allow_nan=False`` so
                every file is standard JSON.
            figures: File name to matplotlib figure, saved as PNG with the schema version
                in a text chunk, and then closed.
            files: File name to bytes of an NPZ, CSV or safetensors file.

        Raises:
            InvalidInputError: When a file name does not end in ``.json``, ``.png``,
                ``.npz``, ``.csv`` or ``.safetensors``; nothing is uploaded then.
        """
        import matplotlib.pyplot as plt

        payload: dict[str, bytes] = {}
        try:
            for name in [*(json_files or {}), *(figures or {}), *(files or {})]:
                check_artifact_name(name)
            for name, obj in (json_files or {}).items():
                payload[name] = json.dumps(obj, allow_nan=False, indent=1).encode("utf-8")
            for name, figure in (figures or {}).items():
                payload[name] = png_bytes(figure)
            payload.update(files or {})
        finally:
            for figure in (figures or {}).values():
                plt.close(figure)
        if run_id is None or not payload:
            return
        self.flush(run_id)
        with tempfile.TemporaryDirectory(prefix="topselect-") as tmp:
            folder = Path(tmp)
            for name, data in payload.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
            op = {"op": "log_artifacts", "artifact_path": ARTIFACT_DIR}
            self._deliver(run_id, op, "upload artifacts", folder)

    def end_run(self, run_id: str | None, status: str) -> None:
        """Flush the run's buffered writes, then end it with an MLflow status.

        Args:
            run_id: The run; ``None`` does nothing.
            status: ``FINISHED``, ``FAILED`` or ``KILLED``.
        """
        if run_id is None:
            return
        self.flush(run_id)
        op = {"op": "set_terminated", "status": status, "end_time": _now_ms()}
        self._deliver(run_id, op, "end the run")
        with self._lock:
            self._ended.add(run_id)

    def flush(self, run_id: str | None = None) -> None:
        """Send the buffered writes of ``run_id``, or of every run when ``None``."""
        with self._lock:
            keys = [run_id] if run_id is not None else list(self._buffers)
            taken = [(key, self._buffers.pop(key)) for key in keys if key in self._buffers]
        for key, buffer in taken:
            if len(buffer):
                self._deliver(key, _batch_op(buffer), "log metrics, params and tags")

    def _buffer(self, run_id: str, add: Callable[[_Buffer], None]) -> None:
        with self._lock:
            buffer = self._buffers.setdefault(run_id, _Buffer())
            add(buffer)
            due = (
                run_id in self._ended
                or len(buffer) >= _MAX_ITEMS
                or time.monotonic() - buffer.started >= self.flush_seconds
            )
        if due:
            self.flush(run_id)

    # -- delivery ------------------------------------------------------------------------

    def _deliver(
        self, run_id: str, op: Mapping[str, Any], action: str, folder: Path | None = None
    ) -> None:
        """Send one write, or spool it while the store is failing or the run is pending."""
        target = self.resolve_run_id(run_id)
        if not self._should_spool():
            # Earlier writes of the run wait in the spool: upload them first, in order.
            waiting = self.is_pending(target) or self.spool.has_key(target)
            if not waiting or self._sync_now():
                target = self.resolve_run_id(run_id)
                try:
                    self._execute(target, op, folder)
                    return
                except Exception as error:  # MLflow raises many types; none may stop training.
                    self._on_failure(action, error)
        self._spool_op(target, op, folder)

    def _execute(self, run_id: str, op: Mapping[str, Any], folder: Path | None) -> None:
        kind = op["op"]
        if kind == "log_batch":
            self._send_batch(run_id, _buffer_from_op(op))
        elif kind == "log_artifacts":
            assert folder is not None, "a log_artifacts operation carries a folder"
            self.client.log_artifacts(run_id, str(folder), artifact_path=op["artifact_path"])
        elif kind == "set_terminated":
            self.client.set_terminated(run_id, op["status"], end_time=op.get("end_time"))
        else:
            raise TrackingError(f"unknown spooled operation {kind!r}.")

    def _send_batch(self, run_id: str, buffer: _Buffer) -> None:
        from mlflow.entities import Metric, Param, RunTag

        metrics = [Metric(k, v, t, s) for k, v, t, s in buffer.metrics]
        params = [Param(k, v) for k, v in buffer.params.items()]
        tags = [RunTag(k, v) for k, v in buffer.tags.items()]
        while metrics or params or tags:
            chunk_params, params = params[:_MAX_PARAMS], params[_MAX_PARAMS:]
            chunk_tags, tags = tags[:_MAX_TAGS], tags[_MAX_TAGS:]
            take = min(_MAX_ITEMS - len(chunk_params) - len(chunk_tags), _MAX_METRICS)
            chunk_metrics, metrics = metrics[:take], metrics[take:]
            self.client.log_batch(
                run_id, metrics=chunk_metrics, params=chunk_params, tags=chunk_tags
            )

    def _should_spool(self) -> bool:
        with self._lock:
            return time.monotonic() < self._paused_until

    def _on_failure(self, action: str, error: Exception) -> None:
        with self._lock:
            first, self._warned = not self._warned, True
            self._paused_until = time.monotonic() + self.retry_seconds
        if first:
            _logger.warning(
                "MLflow failed to %s at %s (%s: %s). Training goes on: MLflow writes are "
                "spooled to %s and uploaded by the first write after %.0f s that reaches "
                "the store, or by `topselect sync --spool-dir %s`. Later failures are "
                "logged at DEBUG level.",
                action,
                self.tracking_uri,
                type(error).__name__,
                _first_line(error),
                self.spool_dir,
                self.retry_seconds,
                self.spool_dir,
            )
        else:
            _logger.debug("MLflow failed to %s: %s", action, error)

    def _spool_op(self, key: str, op: Mapping[str, Any], folder: Path | None = None) -> bool:
        try:
            self.spool.append(key, op, folder)
        except TrackingError as error:
            _logger.error("%s", error)
            return False
        with self._lock:
            self.spooled_operations += 1
        return True

    # -- spool ---------------------------------------------------------------------------

    def sync(self) -> SyncResult:
        """Upload every spooled write of this logger's tracking URI.

        Returns:
            What was uploaded and what remains. A failure stops the upload, is logged at
            DEBUG level and keeps the remaining writes in the spool.
        """
        with self._sync_lock:
            result = self.spool.replay(self._execute, self._create_run)
        with self._lock:
            self._resolved.update(result.created)
        for message in result.errors:
            _logger.debug("Spool upload stopped: %s", message)
        if result.operations:
            _logger.info(
                "Uploaded %d spooled MLflow writes of %d runs from %s; %d runs remain.",
                result.operations,
                result.runs,
                self.spool_dir,
                result.remaining,
            )
        return result

    def _sync_now(self) -> bool:
        """Upload the spool before a direct write; return whether it is empty now."""
        result = self.sync()
        if result.errors:
            with self._lock:
                self._paused_until = time.monotonic() + self.retry_seconds
            return False
        return result.remaining == 0

    def resolve_run_id(self, run_id: str) -> str:
        """Return the real run id of a pending placeholder once the spool created it."""
        if not self.is_pending(run_id):
            return run_id
        resolved = self._resolved.get(run_id) or self.spool.resolved_id(run_id)
        if resolved:
            with self._lock:
                self._resolved[run_id] = resolved
        return resolved or run_id


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


def _study_tags(study: optuna.Study) -> dict[str, str]:
    return {
        "topselect.role": "study",
        "topselect.study_name": study.study_name,
        "topselect.schema_version": str(SCHEMA_VERSION),
        "topselect.direction": "/".join(d.name.lower() for d in study.directions),
    }


def _trial_tags(
    study: optuna.Study, trial: optuna.trial.BaseTrial, parent: str | None
) -> dict[str, str]:
    directions = [d.name for d in study.directions]
    tags = {
        # The tags optuna-integration's MLflowCallback sets on its runs.
        "number": str(trial.number),
        "direction": directions[0] if len(directions) == 1 else str(directions),
        "topselect.role": "trial",
        "topselect.trial_number": str(trial.number),
        "topselect.study_name": study.study_name,
        "topselect.schema_version": str(SCHEMA_VERSION),
        "topselect.state": "RUNNING",
    }
    if parent:
        tags["mlflow.parentRunId"] = str(parent)
    return tags


def _callback_run_id(trial: optuna.trial.BaseTrial) -> str | None:
    """Return the run id MLflowCallback stored for ``trial``, if any.

    Optuna 5.1's ``Trial`` has no public reader of system attributes, so this reads them
    through the trial's storage.
    """
    try:
        attrs = trial.storage.get_trial_system_attrs(trial._trial_id)  # type: ignore[attr-defined]
    except AttributeError:
        attrs = getattr(trial, "system_attrs", {}) or {}
    value = attrs.get(CALLBACK_RUN_ID_ATTR)
    return str(value) if value else None


def _set_callback_run_id(trial: optuna.trial.BaseTrial, run_id: str) -> None:
    try:
        trial.storage.set_trial_system_attr(  # type: ignore[attr-defined]
            trial._trial_id,  # type: ignore[attr-defined]
            CALLBACK_RUN_ID_ATTR,
            run_id,
        )
    except AttributeError:
        _logger.debug("Trial %s has no storage; the run id is not shared.", trial.number)


def _batch_op(buffer: _Buffer) -> dict[str, Any]:
    return {
        "op": "log_batch",
        "metrics": [list(item) for item in buffer.metrics],
        "params": dict(buffer.params),
        "tags": dict(buffer.tags),
    }


def _buffer_from_op(op: Mapping[str, Any]) -> _Buffer:
    return _Buffer(
        metrics=[(str(k), float(v), int(t), int(s)) for k, v, t, s in op.get("metrics", [])],
        params=dict(op.get("params", {})),
        tags=dict(op.get("tags", {})),
    )


def _ranking_settings(study: optuna.Study) -> dict[str, Any]:
    """Return the weight and score ``compare`` must rank with to match the study's sampler."""
    from topselect.search._ranking import DEFAULT_SCORE, DEFAULT_WEIGHT

    sampler = study.sampler
    return {
        "weight": getattr(sampler, "weight", DEFAULT_WEIGHT),
        "score": getattr(sampler, "score", DEFAULT_SCORE),
    }


def _strings(values: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in values.items()}


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def _is_finite(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return number == number and number not in (float("inf"), float("-inf"))
