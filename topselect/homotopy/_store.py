"""Storage of class representatives' waypoints, shared by every worker of a study.

Waypoints are written as safetensors: a JSON header and raw little-endian tensor bytes,
so loading one runs no code (unlike a pickle). Each file contains ``fractions`` (``(T,)``
float64) and ``waypoints`` (``(T, P)`` float32 or float16), plus string metadata
``format``, ``schema_version`` and ``dtype``. NPZ files written by earlier versions are
still read, with ``allow_pickle=False``.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from topselect.exceptions import InvalidInputError, TrackingError

if TYPE_CHECKING:
    import torch

__all__ = [
    "LocalWaypointStore",
    "MlflowWaypointStore",
    "StoredWaypoints",
    "WaypointDtype",
    "WaypointStore",
    "decode_waypoints",
    "encode_waypoints",
]

_logger = logging.getLogger(__name__)

#: Precision of stored waypoints. float16 halves the size; values beyond its range
#: (+-65504) would become infinite, so such waypoints are stored in float32 instead.
WaypointDtype = Literal["float32", "float16"]

_FORMAT = "topselect.waypoints"
_SCHEMA_VERSION = "1"
#: Default bound of the per-process cache of loaded waypoints, in bytes.
DEFAULT_CACHE_BYTES = 2 * 2**30


@dataclass(frozen=True)
class StoredWaypoints:
    """Location, size and precision of a trajectory's stored waypoints.

    Attributes:
        reference: String to pass to ``load``.
        nbytes: Size of the stored file in bytes.
        dtype: Precision actually stored (``"float32"`` when float16 would overflow).
    """

    reference: str
    nbytes: int
    dtype: str


class WaypointStore(Protocol):
    """Saves a trial's waypoints and loads them back from the returned reference."""

    def save(
        self,
        trial_number: int,
        waypoints: Mapping[float, torch.Tensor],
        *,
        dtype: WaypointDtype = "float32",
    ) -> StoredWaypoints:
        """Store the waypoints and return where they went."""
        ...

    def load(self, reference: str) -> dict[float, torch.Tensor]:
        """Return the waypoints stored under ``reference`` as float32 CPU tensors."""
        ...


def encode_waypoints(
    waypoints: Mapping[float, torch.Tensor], dtype: WaypointDtype = "float32"
) -> tuple[bytes, str]:
    """Serialize waypoints to safetensors bytes.

    Args:
        waypoints: Flat parameter vectors of equal length by progress fraction.
        dtype: ``"float32"`` or ``"float16"``.

    Returns:
        The bytes and the dtype actually stored.

    Raises:
        InvalidInputError: For an unknown dtype, no waypoints, or vectors of unequal length.
    """
    import torch
    from safetensors.torch import save

    if dtype not in ("float32", "float16"):
        raise InvalidInputError(f"dtype must be 'float32' or 'float16', but got {dtype!r}.")
    if not waypoints:
        raise InvalidInputError("waypoints must hold at least one fraction, but it is empty.")
    fractions = sorted(waypoints)
    lengths = {int(waypoints[f].numel()) for f in fractions}
    if len(lengths) != 1:
        raise InvalidInputError(f"waypoints must all have one length, but got {sorted(lengths)}.")
    stacked = torch.stack(
        [waypoints[f].detach().reshape(-1).to("cpu", torch.float32) for f in fractions]
    )
    stored = dtype
    if dtype == "float16":
        half = stacked.to(torch.float16)
        if bool((torch.isfinite(half) != torch.isfinite(stacked)).any()):
            _logger.warning(
                "Waypoints exceed the float16 range (max |value| %.4g); storing them in "
                "float32 instead.",
                float(stacked.abs().max()),
            )
            stored = "float32"
        else:
            stacked = half
    tensors = {
        "fractions": torch.tensor(fractions, dtype=torch.float64),
        "waypoints": stacked.contiguous(),
    }
    metadata = {"format": _FORMAT, "schema_version": _SCHEMA_VERSION, "dtype": stored}
    return save(tensors, metadata=metadata), stored


def decode_waypoints(data: bytes) -> dict[float, torch.Tensor]:
    """Read waypoints written by :func:`encode_waypoints` as float32 CPU tensors.

    Raises:
        InvalidInputError: When the bytes are not a topselect waypoints file.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except SafetensorError as error:
        raise InvalidInputError(f"not a safetensors waypoints file: {error}") from error
    if set(tensors) != {"fractions", "waypoints"}:
        raise InvalidInputError(
            f"a waypoints file contains 'fractions' and 'waypoints', but this one contains "
            f"{sorted(tensors)}."
        )
    fractions = tensors["fractions"].tolist()
    stacked = tensors["waypoints"].to(torch.float32)
    return {float(f): stacked[i] for i, f in enumerate(fractions)}


def _read_npz(path: Path) -> dict[float, torch.Tensor]:
    import torch

    # allow_pickle=False: an artifact store is shared, and pickles execute code on load.
    with np.load(path, allow_pickle=False) as data:
        fractions = data["fractions"].tolist()
        stacked = torch.from_numpy(np.array(data["waypoints"], dtype=np.float32))
    return {float(f): stacked[i] for i, f in enumerate(fractions)}


def _read_file(path: Path) -> dict[float, torch.Tensor]:
    if path.suffix == ".npz":
        return _read_npz(path)
    return decode_waypoints(path.read_bytes())


class _Cache:
    """Loaded waypoints by reference, least recently used dropped past ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[dict[float, Any], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, reference: str) -> dict[float, torch.Tensor] | None:
        with self._lock:
            item = self._items.get(reference)
            if item is None:
                return None
            self._items.move_to_end(reference)
            return item[0]

    def put(self, reference: str, waypoints: dict[float, torch.Tensor]) -> None:
        size = sum(int(t.numel()) * t.element_size() for t in waypoints.values())
        with self._lock:
            if reference in self._items:
                self._bytes -= self._items.pop(reference)[1]
            self._items[reference] = (waypoints, size)
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped


class LocalWaypointStore:
    """Waypoints as safetensors files in one directory (one machine or a shared disk).

    Loaded waypoints are cached in memory per store, up to ``cache_bytes``.

    Args:
        directory: Where the files go; created if missing.
        cache_bytes: Bound of the in-memory cache in bytes (float32 size).
    """

    def __init__(self, directory: str | Path, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._cache = _Cache(cache_bytes)

    def save(
        self,
        trial_number: int,
        waypoints: Mapping[float, torch.Tensor],
        *,
        dtype: WaypointDtype = "float32",
    ) -> StoredWaypoints:
        """Write ``trial-<n>-waypoints.safetensors`` and return its path as the reference."""
        data, stored = encode_waypoints(waypoints, dtype)
        path = self.directory / f"trial-{trial_number}-waypoints.safetensors"
        path.write_bytes(data)
        _log_size(trial_number, len(waypoints), stored, len(data), str(path))
        reference = str(path)
        # Cache what other workers will load (float16-rounded when stored so), so that
        # every worker tests against the same values.
        self._cache.put(reference, decode_waypoints(data))
        return StoredWaypoints(reference, len(data), stored)

    def load(self, reference: str) -> dict[float, torch.Tensor]:
        """Return the waypoints in the file ``reference`` (cached after the first read)."""
        cached = self._cache.get(reference)
        if cached is not None:
            return cached
        waypoints = _read_file(Path(reference))
        self._cache.put(reference, waypoints)
        return waypoints


class MlflowWaypointStore:
    """Waypoints as the ``topselect/waypoints.safetensors`` artifact of each trial's run.

    Loaded waypoints are cached in memory per process, so each worker downloads a
    representative once.

    Args:
        client: An ``mlflow.MlflowClient``.
        run_ids: Maps trial numbers to MLflow run ids; the tracker fills it in.
        cache_bytes: Bound of the in-memory cache in bytes (float32 size).
    """

    ARTIFACT = "topselect/waypoints.safetensors"

    def __init__(
        self,
        client: Any,
        run_ids: dict[int, str] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.client = client
        self.run_ids = run_ids if run_ids is not None else {}
        self._cache = _Cache(cache_bytes)

    def save(
        self,
        trial_number: int,
        waypoints: Mapping[float, torch.Tensor],
        *,
        dtype: WaypointDtype = "float32",
    ) -> StoredWaypoints:
        """Upload the waypoints to the trial's run and return a ``runs:/`` reference.

        Raises:
            TrackingError: When the trial has no MLflow run.
        """
        run_id = self.run_ids.get(trial_number)
        if run_id is None:
            raise TrackingError(f"trial {trial_number} has no MLflow run to store waypoints in.")
        data, stored = encode_waypoints(waypoints, dtype)
        with tempfile.TemporaryDirectory(prefix="topselect-") as tmp:
            path = Path(tmp) / Path(self.ARTIFACT).name
            path.write_bytes(data)
            self.client.log_artifact(run_id, str(path), artifact_path="topselect")
        reference = f"runs:/{run_id}/{self.ARTIFACT}"
        _log_size(trial_number, len(waypoints), stored, len(data), reference)
        self._cache.put(reference, decode_waypoints(data))
        return StoredWaypoints(reference, len(data), stored)

    def load(self, reference: str) -> dict[float, torch.Tensor]:
        """Download the artifact ``reference`` once per process and return its waypoints."""
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
            waypoints = _read_file(Path(local))
        self._cache.put(reference, waypoints)
        return waypoints


def _log_size(trial_number: int, count: int, dtype: str, nbytes: int, where: str) -> None:
    _logger.info(
        "Stored %d waypoints of trial %d (%s): %d bytes at %s.",
        count,
        trial_number,
        dtype,
        nbytes,
        where,
    )
