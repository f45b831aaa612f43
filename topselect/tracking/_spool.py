"""A local spool of MLflow writes that could not reach the tracking store.

Each run with spooled writes gets one folder under the spool directory, named after its
run id (or after a ``pending-`` id when the run itself could not be created):

* ``entry.json``: spool format version, tracking URI and the run key;
* ``ops.jsonl``: one JSON operation per line, in the order they were issued
  (``create_run``, ``log_batch``, ``log_artifacts``, ``set_terminated``), with their
  original timestamps;
* ``artifacts/<n>/``: the files of the n-th ``log_artifacts`` operation;
* ``state.json``: how many operations were uploaded, and the run id a pending run got.

Replaying uploads the operations in order and records progress after each one, so an
interrupted replay resumes where it stopped. A folder is deleted once every operation
is uploaded. Writers and replayers take an exclusive ``flock`` on the folder's ``lock``
file, so several processes may share one spool directory on one machine.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topselect.exceptions import TrackingError

__all__ = [
    "PENDING_PREFIX",
    "Spool",
    "SyncResult",
    "default_spool_dir",
    "new_pending_id",
    "spooled_uris",
]

_logger = logging.getLogger(__name__)

#: Prefix of the placeholder id of a run whose creation was spooled.
PENDING_PREFIX = "pending-"
_FORMAT_VERSION = 1
# Folder of files named after pending ids, each holding the id of the run created for it.
_RESOLVED = "resolved"

#: Executes one spooled operation against the store: (run id, operation, artifact folder).
Execute = Callable[[str, Mapping[str, Any], Path | None], None]
#: Creates the run of a ``create_run`` operation and returns its id.
Create = Callable[[Mapping[str, Any]], str]


def default_spool_dir() -> Path:
    """Return ``$TOPSELECT_SPOOL_DIR``, else ``$XDG_CACHE_HOME/topselect/spool``.

    ``XDG_CACHE_HOME`` defaults to ``~/.cache``.
    """
    configured = os.environ.get("TOPSELECT_SPOOL_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "topselect" / "spool"


def spooled_uris(directory: str | Path) -> list[str]:
    """Return the tracking URIs that have writes in the spool ``directory``."""
    root = Path(directory)
    if not root.is_dir():
        return []
    uris = set()
    for entry in root.iterdir():
        header = _read_json(entry / "entry.json")
        if header is not None and isinstance(header.get("tracking_uri"), str):
            uris.add(header["tracking_uri"])
    return sorted(uris)


def new_pending_id() -> str:
    """Return a fresh placeholder run id (``pending-`` and 32 hex digits)."""
    return PENDING_PREFIX + uuid.uuid4().hex


@dataclass
class SyncResult:
    """Result of one replay of a spool: what it uploaded.

    Attributes:
        runs: Runs whose spooled operations were all uploaded.
        operations: Operations uploaded.
        remaining: Runs that still have operations in the spool.
        created: Maps each pending id to the id of the run created for it.
        errors: One message per run whose replay failed.
    """

    runs: int = 0
    operations: int = 0
    remaining: int = 0
    created: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class Spool:
    """Spooled MLflow writes of one tracking URI in one directory.

    Args:
        directory: The spool directory (created on the first write).
        tracking_uri: Store the spooled writes belong to. Replays skip folders written
            for another URI.
    """

    def __init__(self, directory: str | Path, tracking_uri: str) -> None:
        self.directory = Path(directory)
        self.tracking_uri = tracking_uri

    # -- writing -------------------------------------------------------------------------

    def append(self, key: str, op: Mapping[str, Any], folder: Path | None = None) -> None:
        """Append one operation of run ``key``; ``folder`` contains a ``log_artifacts`` payload.

        The payload is copied, so the caller may delete ``folder`` afterwards.

        Raises:
            TrackingError: When the spool directory cannot be written.
        """
        entry = self.directory / key
        # A replay in another process may delete the folder between mkdir and the lock,
        # so the write is retried on a fresh folder.
        for attempt in range(3):
            try:
                entry.mkdir(parents=True, exist_ok=True)
                with _locked(entry, blocking=True):
                    self._write_op(entry, key, op, folder)
                return
            except (FileNotFoundError, _Busy):
                if attempt == 2:
                    raise TrackingError(
                        f"could not spool an MLflow write to {entry}: the folder kept "
                        "disappearing; the write is lost."
                    ) from None
            except OSError as error:
                raise TrackingError(
                    f"could not spool an MLflow write to {entry}: {error}; the write is lost."
                ) from error

    def _write_op(self, entry: Path, key: str, op: Mapping[str, Any], folder: Path | None) -> None:
        self._write_header(entry, key)
        record = dict(op)
        if folder is not None:
            record["folder"] = self._copy_payload(entry, folder)
        with (entry / "ops.jsonl").open("a", encoding="utf-8") as ops:
            ops.write(json.dumps(record, allow_nan=False) + "\n")
            ops.flush()
            os.fsync(ops.fileno())

    def _write_header(self, entry: Path, key: str) -> None:
        header = entry / "entry.json"
        if header.exists():
            return
        document = {
            "format_version": _FORMAT_VERSION,
            "tracking_uri": self.tracking_uri,
            "key": key,
            "created": time.time(),
        }
        header.write_text(json.dumps(document), encoding="utf-8")

    @staticmethod
    def _copy_payload(entry: Path, folder: Path) -> str:
        payloads = entry / "artifacts"
        payloads.mkdir(exist_ok=True)
        name = f"{len(list(payloads.iterdir())):05d}"
        shutil.copytree(folder, payloads / name)
        return f"artifacts/{name}"

    # -- reading -------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Return the run keys with spooled operations for this tracking URI, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            if entry.name == _RESOLVED:
                continue
            header = _read_json(entry / "entry.json")
            if header is None or header.get("tracking_uri") != self.tracking_uri:
                continue
            found.append((float(header.get("created", 0.0)), entry.name))
        return [key for _, key in sorted(found)]

    def has_key(self, key: str) -> bool:
        """Return whether run ``key`` has operations waiting in the spool."""
        return (self.directory / key / "ops.jsonl").exists()

    def resolved_id(self, key: str) -> str | None:
        """Return the run id a pending key was created as, if its replay got that far."""
        state = _read_json(self.directory / key / "state.json") or {}
        run_id = state.get("run_id")
        if run_id:
            return str(run_id)
        try:
            return (self.directory / _RESOLVED / key).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    # -- replaying -----------------------------------------------------------------------

    def replay(self, execute: Execute, create: Create) -> SyncResult:
        """Upload every spooled run of this URI, in the order the runs were spooled.

        Stops at the first failed operation, since the store is most likely still
        unreachable, and leaves the rest for the next replay. Folders locked by another
        process are left for that process.
        """
        result = SyncResult()
        keys = self.keys()
        for index, key in enumerate(keys):
            try:
                done = self._replay_entry(key, execute, create, result)
            except _Busy:
                result.remaining += 1
                continue
            except Exception as error:  # MLflow raises many types; all mean "not now".
                result.errors.append(f"run {key}: {type(error).__name__}: {error}")
                result.remaining += len(keys) - index
                break
            if done:
                result.runs += 1
        return result

    def _replay_entry(
        self, key: str, execute: Execute, create: Create, result: SyncResult
    ) -> bool:
        entry = self.directory / key
        with _locked(entry, blocking=False):
            if not (entry / "ops.jsonl").exists():
                return False
            ops = _read_ops(entry / "ops.jsonl")
            state = _read_json(entry / "state.json") or {}
            done = int(state.get("done", 0))
            run_id = state.get("run_id") or (None if key.startswith(PENDING_PREFIX) else key)
            for position in range(done, len(ops)):
                op = ops[position]
                if op["op"] == "create_run":
                    if run_id is None:
                        run_id = create(op)
                        result.created[key] = run_id
                else:
                    if run_id is None:
                        raise TrackingError(f"spooled run {key} has no create_run operation.")
                    folder = entry / op["folder"] if "folder" in op else None
                    execute(run_id, op, folder)
                result.operations += 1
                _write_json(entry / "state.json", {"done": position + 1, "run_id": run_id})
            if run_id is not None and key.startswith(PENDING_PREFIX):
                result.created.setdefault(key, run_id)
                # Kept after the folder is gone, for a process that still writes to the
                # placeholder while another process uploaded its run.
                (self.directory / _RESOLVED).mkdir(exist_ok=True)
                (self.directory / _RESOLVED / key).write_text(run_id, encoding="utf-8")
            shutil.rmtree(entry)
        return True


class _Busy(Exception):
    """Another process holds the entry's lock."""


@contextmanager
def _locked(entry: Path, *, blocking: bool) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # NOTE: no fcntl on Windows, so spool folders are not locked there.
        yield
        return
    if not entry.exists():
        raise _Busy(str(entry))
    with (entry / "lock").open("a") as handle:
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            raise _Busy(str(entry)) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_ops(path: Path) -> list[dict[str, Any]]:
    ops = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            ops.append(json.loads(line))
    return ops


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document), encoding="utf-8")
    temporary.replace(path)
