"""Storage of class representatives' waypoints, shared by every worker of a study."""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from topselect.exceptions import TrackingError

if TYPE_CHECKING:
    import torch

__all__ = ["LocalWaypointStore", "MlflowWaypointStore", "WaypointStore"]

_logger = logging.getLogger(__name__)


class WaypointStore(Protocol):
    """Saves a trial's waypoints and loads them back from the returned reference."""

    def save(self, trial_number: int, waypoints: dict[float, torch.Tensor]) -> str:
        """Store the waypoints and return a reference string to load them by."""
        ...

    def load(self, reference: str) -> dict[float, torch.Tensor]:
        """Return the waypoints stored under ``reference``."""
        ...


def _write_npz(path: Path, waypoints: dict[float, torch.Tensor]) -> None:
    fractions = sorted(waypoints)
    np.savez(
        path,
        fractions=np.asarray(fractions, dtype=np.float64),
        waypoints=np.stack([waypoints[f].numpy() for f in fractions]),
    )


def _read_npz(path: Path) -> dict[float, torch.Tensor]:
    import torch

    # allow_pickle=False: an artifact store is shared, and pickles execute code on load.
    with np.load(path, allow_pickle=False) as data:
        fractions = data["fractions"].tolist()
        stacked = torch.from_numpy(np.array(data["waypoints"], dtype=np.float32))
    return {float(f): stacked[i] for i, f in enumerate(fractions)}


class LocalWaypointStore:
    """Waypoints as NPZ files in one directory (for a single machine or a shared disk).

    Args:
        directory: Where the files go; created if missing.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, trial_number: int, waypoints: dict[float, torch.Tensor]) -> str:
        path = self.directory / f"trial-{trial_number}-waypoints.npz"
        _write_npz(path, waypoints)
        return str(path)

    def load(self, reference: str) -> dict[float, torch.Tensor]:
        return _read_npz(Path(reference))


class MlflowWaypointStore:
    """Waypoints as the ``topselect/waypoints.npz`` artifact of each trial's MLflow run.

    Loaded waypoints are cached in memory per process, so each worker downloads a
    representative once.

    Args:
        client: An ``mlflow.MlflowClient``.
        run_ids: Maps trial numbers to MLflow run ids; the tracker fills it in.
    """

    ARTIFACT = "topselect/waypoints.npz"

    def __init__(self, client, run_ids: dict[int, str] | None = None) -> None:
        self.client = client
        self.run_ids = run_ids if run_ids is not None else {}
        self._cache: dict[str, dict[float, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def save(self, trial_number: int, waypoints: dict[float, torch.Tensor]) -> str:
        run_id = self.run_ids.get(trial_number)
        if run_id is None:
            raise TrackingError(f"trial {trial_number} has no MLflow run to store waypoints in.")
        with tempfile.TemporaryDirectory(prefix="topselect-") as tmp:
            path = Path(tmp) / "waypoints.npz"
            _write_npz(path, waypoints)
            self.client.log_artifact(run_id, str(path), artifact_path="topselect")
        reference = f"runs:/{run_id}/{self.ARTIFACT}"
        with self._lock:
            self._cache[reference] = dict(waypoints)
        return reference

    def load(self, reference: str) -> dict[float, torch.Tensor]:
        with self._lock:
            cached = self._cache.get(reference)
        if cached is not None:
            return cached
        import mlflow

        with tempfile.TemporaryDirectory(prefix="topselect-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=reference,
                dst_path=tmp,
                tracking_uri=self.client.tracking_uri,
            )
            waypoints = _read_npz(Path(local))
        with self._lock:
            self._cache[reference] = waypoints
        return waypoints
