"""The MLflow tracking URI topselect uses when the caller gives none."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

__all__ = ["default_tracking_uri", "enable_sqlite_wal", "mlflow_client", "resolve_tracking_uri"]

_logger = logging.getLogger(__name__)


def default_tracking_uri(directory: str | Path | None = None) -> str:
    """Return ``sqlite:///<directory>/mlflow.db`` (the working directory by default).

    This is the store MLflow 3 itself uses when nothing is configured, so ``mlflow ui``
    started in the same directory opens it with no flags. topselect sets it explicitly,
    because MLflow falls back to a deprecated file store when ``./mlruns`` exists.
    """
    base = Path(directory) if directory is not None else Path.cwd()
    return f"sqlite:///{(base / 'mlflow.db').resolve()}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Return ``uri``, else ``$MLFLOW_TRACKING_URI``, else :func:`default_tracking_uri`."""
    if uri:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """Return the database file of a ``sqlite:///`` URI, or ``None`` for other schemes."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix) :]
    if path in ("", ":memory:"):
        return None
    return Path(path.split("?", 1)[0])


def enable_sqlite_wal(uri: str) -> None:
    """Switch a sqlite tracking store to write-ahead logging, which serves many writers better.

    Does nothing for other stores. Call it once, after the store exists and before
    worker processes start.
    """
    path = sqlite_path(uri)
    if path is None or not path.exists():
        return
    try:
        with sqlite3.connect(path, timeout=30) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as error:
        _logger.warning("Could not enable WAL on %s: %s", path, error)


def mlflow_client(uri: str):
    """Return an ``mlflow.MlflowClient`` for ``uri``.

    Raises:
        TrackingError: When MLflow has no store for the URI's scheme (a typo such as
            ``sqlite//mlflow.db`` or ``htp://``). MLflow reports that as a model registry
            error, which does not tell the caller what to fix.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from topselect.exceptions import TrackingError

    try:
        return MlflowClient(tracking_uri=uri)
    except MlflowException as error:
        if "unsupported URI" not in str(error):
            raise
        raise TrackingError(
            f"MLflow has no tracking store for the URI {uri!r}. Use a URI such as "
            "sqlite:///path/to/mlflow.db, http://127.0.0.1:5000 or "
            "postgresql://user@host/database."
        ) from None
