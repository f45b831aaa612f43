"""Waypoint storage: safetensors encoding, float16, local files and MLflow artifacts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

import topselect
from topselect.homotopy import (
    LocalWaypointStore,
    MlflowWaypointStore,
    decode_waypoints,
    encode_waypoints,
)

FRACTIONS = (0.0, 0.5, 1.0)
N_PARAMETERS = 1000


def _waypoints(scale: float = 1.0) -> dict[float, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {f: scale * torch.randn(N_PARAMETERS, generator=generator) for f in FRACTIONS}


def _assert_equal(loaded: dict[float, torch.Tensor], expected: dict[float, torch.Tensor]):
    assert sorted(loaded) == sorted(expected)
    for fraction, tensor in expected.items():
        assert loaded[fraction].dtype == torch.float32
        assert torch.equal(loaded[fraction], tensor), f"fraction {fraction} differs"


def test_encode_float32_round_trip_exact() -> None:
    waypoints = _waypoints()

    data, stored = encode_waypoints(waypoints)

    assert stored == "float32"
    _assert_equal(decode_waypoints(data), waypoints)


def test_encode_float16_half_size_close() -> None:
    waypoints = _waypoints()

    full, _ = encode_waypoints(waypoints, "float32")
    half, stored = encode_waypoints(waypoints, "float16")
    loaded = decode_waypoints(half)

    assert stored == "float16"
    payload = len(FRACTIONS) * N_PARAMETERS
    assert len(full) - len(half) == pytest.approx(2 * payload, abs=64)
    for fraction, tensor in waypoints.items():
        assert loaded[fraction].dtype == torch.float32
        # float16 keeps 11 significant bits: relative error at most 2**-11.
        error = (loaded[fraction] - tensor).abs() / tensor.abs().clamp_min(1e-3)
        assert float(error.max()) <= 2**-11


def test_encode_float16_overflow_keeps_float32(caplog: pytest.LogCaptureFixture) -> None:
    waypoints = _waypoints(scale=1e5)

    with caplog.at_level(logging.WARNING, logger="topselect.homotopy._store"):
        data, stored = encode_waypoints(waypoints, "float16")

    assert stored == "float32"
    assert "exceed the float16 range" in caplog.text
    _assert_equal(decode_waypoints(data), waypoints)


@pytest.mark.parametrize(
    ("waypoints", "dtype", "pattern"),
    [
        ({0.0: torch.zeros(3)}, "bfloat16", "dtype must be 'float32' or 'float16'"),
        ({}, "float32", "waypoints must hold at least one fraction"),
        ({0.0: torch.zeros(3), 1.0: torch.zeros(4)}, "float32", r"one length, but got \[3, 4\]"),
    ],
)
def test_encode_invalid_input_raises(waypoints, dtype, pattern) -> None:
    with pytest.raises(topselect.InvalidInputError, match=pattern):
        encode_waypoints(waypoints, dtype)


def test_decode_rejects_other_files() -> None:
    from safetensors.torch import save

    with pytest.raises(topselect.InvalidInputError, match="not a safetensors waypoints file"):
        decode_waypoints(b"\x00" * 16)
    with pytest.raises(topselect.InvalidInputError, match=r"contains \['weights'\]"):
        decode_waypoints(save({"weights": torch.zeros(2)}))


def test_local_store_round_trip_and_size(tmp_path: Path, caplog) -> None:
    store = LocalWaypointStore(tmp_path / "store")
    waypoints = _waypoints()

    with caplog.at_level(logging.INFO, logger="topselect.homotopy._store"):
        stored = store.save(3, waypoints, dtype="float16")
    fresh = LocalWaypointStore(tmp_path / "store")
    loaded = fresh.load(stored.reference)

    path = Path(stored.reference)
    assert path.name == "trial-3-waypoints.safetensors"
    assert stored.nbytes == path.stat().st_size
    assert f"{stored.nbytes} bytes" in caplog.text
    # The saving worker caches what the others load: the float16-rounded values.
    _assert_equal(store.load(stored.reference), loaded)
    assert fresh.load(stored.reference) is loaded  # Cached after the first read.


def test_local_store_reads_legacy_npz(tmp_path: Path) -> None:
    waypoints = _waypoints()
    path = tmp_path / "trial-1-waypoints.npz"
    np.savez(
        path,
        fractions=np.asarray(FRACTIONS),
        waypoints=np.stack([waypoints[f].numpy() for f in FRACTIONS]),
    )

    loaded = LocalWaypointStore(tmp_path).load(str(path))

    _assert_equal(loaded, waypoints)


def test_local_store_cache_bounded(tmp_path: Path) -> None:
    per_trial = len(FRACTIONS) * N_PARAMETERS * 4
    store = LocalWaypointStore(tmp_path, cache_bytes=per_trial)
    first = store.save(0, _waypoints())
    second = store.save(1, _waypoints(2.0))

    assert store._cache.get(first.reference) is None  # Dropped, least recently used.
    assert store._cache.get(second.reference) is not None
    _assert_equal(store.load(first.reference), _waypoints())  # Read again from disk.


def test_mlflow_store_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("waypoints", artifact_location=str(tmp_path / "art"))
    run_id = client.create_run(experiment).info.run_id
    waypoints = _waypoints()

    stored = MlflowWaypointStore(client, {5: run_id}).save(5, waypoints)
    loaded = MlflowWaypointStore(client).load(stored.reference)

    assert stored.reference == f"runs:/{run_id}/topselect/waypoints.safetensors"
    artifacts = [a.path for a in client.list_artifacts(run_id, "topselect")]
    assert artifacts == ["topselect/waypoints.safetensors"]
    _assert_equal(loaded, waypoints)


def test_mlflow_store_without_run_raises() -> None:
    store = MlflowWaypointStore(client=None)

    with pytest.raises(topselect.TrackingError, match="trial 2 has no MLflow run"):
        store.save(2, _waypoints())
