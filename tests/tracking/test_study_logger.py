"""StudyLogger on fresh sqlite stores: where artifacts go and how a study run ends."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pytest
from mlflow import MlflowClient

import topselect


@pytest.fixture
def store_and_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A store folder and a different working directory, which becomes the cwd."""
    store, cwd = tmp_path / "store", tmp_path / "cwd"
    store.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return store, cwd


def test_artifacts_stored_beside_sqlite_store(store_and_cwd: tuple[Path, Path]) -> None:
    store, cwd = store_and_cwd
    uri = f"sqlite:///{store / 'mlflow.db'}"
    logger = topselect.StudyLogger(uri)
    study = optuna.create_study(study_name="beside store", storage=f"sqlite:///{store / 'o.db'}")
    trial = study.ask()
    run_id = logger.start_trial(study, trial)
    figure = plt.figure()
    logger.log_artifacts(run_id, json_files={"a.json": {"x": 1}}, figures={"a.png": figure})

    experiment = MlflowClient(uri).get_experiment_by_name("beside store")
    expected = (store / "mlartifacts" / "beside_store").resolve().as_uri()
    assert experiment.artifact_location == expected
    stored = list((store / "mlartifacts" / "beside_store").rglob("a.json"))
    assert len(stored) == 1
    assert json.loads(stored[0].read_text()) == {"x": 1}
    assert not (cwd / "mlruns").exists()
    assert not plt.fignum_exists(figure.number)


def test_finish_study_ends_parent_run(store_and_cwd: tuple[Path, Path]) -> None:
    store, _ = store_and_cwd
    uri = f"sqlite:///{store / 'mlflow.db'}"
    logger = topselect.StudyLogger(uri)
    study = optuna.create_study(study_name="finished", storage=f"sqlite:///{store / 'o.db'}")
    parent = logger.prepare_study(study)
    for value in (1.0, 2.0):
        trial = study.ask()
        study.tell(trial, value)
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)

    logger.finish_study(study)

    run = MlflowClient(uri).get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.tags["topselect.trials_complete"] == "2"
    assert run.data.tags["topselect.trials_pruned"] == "1"


def test_prepare_study_reuses_parent_run(store_and_cwd: tuple[Path, Path]) -> None:
    store, _ = store_and_cwd
    uri = f"sqlite:///{store / 'mlflow.db'}"
    storage = f"sqlite:///{store / 'o.db'}"
    study = optuna.create_study(study_name="reused", storage=storage)
    first = topselect.StudyLogger(uri).prepare_study(study)
    reloaded = optuna.load_study(study_name="reused", storage=storage)
    second = topselect.StudyLogger(uri).prepare_study(reloaded)
    assert second == first


def test_prepare_study_records_sampler_settings(store_and_cwd: tuple[Path, Path]) -> None:
    store, _ = store_and_cwd
    uri = f"sqlite:///{store / 'mlflow.db'}"
    sampler = topselect.TopologicalSampler(weight=0.25, score="basin_integral", seed=0)
    study = optuna.create_study(study_name="settings", sampler=sampler)
    parent = topselect.StudyLogger(uri).prepare_study(study)
    params = MlflowClient(uri).get_run(parent).data.params
    assert params["topselect.weight"] == "0.25"
    assert params["topselect.score"] == "basin_integral"


def test_corrupt_store_raises_tracking_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "mlflow.db"
    corrupt.write_bytes(b"this is not a sqlite database" * 100)
    logger = topselect.StudyLogger(f"sqlite:///{corrupt}")
    study = optuna.create_study(study_name="corrupt")
    with pytest.raises(topselect.TrackingError, match="could not prepare MLflow run"):
        logger.prepare_study(study)


def test_prepare_study_replaces_missing_parent(store_and_cwd: tuple[Path, Path]) -> None:
    store, _ = store_and_cwd
    storage = f"sqlite:///{store / 'o.db'}"
    study = optuna.create_study(study_name="moved", storage=storage)
    old = topselect.StudyLogger(f"sqlite:///{store / 'old.db'}").prepare_study(study)

    new_uri = f"sqlite:///{store / 'new.db'}"
    reloaded = optuna.load_study(study_name="moved", storage=storage)
    new = topselect.StudyLogger(new_uri).prepare_study(reloaded)

    assert new != old
    assert MlflowClient(new_uri).get_run(new).data.tags["topselect.role"] == "study"
    assert (
        optuna.load_study(study_name="moved", storage=storage).user_attrs[
            "topselect.mlflow_parent_run_id"
        ]
        == new
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_paused_after_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # Removed here so the logger's own bounds apply; monkeypatch drops them again after.
    for name in ("MAX_RETRIES", "BACKOFF_FACTOR", "TIMEOUT"):
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{name}", raising=False)
    logger = topselect.StudyLogger(f"http://127.0.0.1:{_closed_port()}")

    started = time.monotonic()
    logger.log_metrics("0" * 32, {"a": 1.0})
    first = time.monotonic() - started
    started = time.monotonic()
    logger.log_metrics("0" * 32, {"a": 2.0})
    logger.set_tags("0" * 32, {"b": "c"})
    second = time.monotonic() - started

    assert first < 30.0
    assert second < 0.5
    assert logger.skipped_calls == 2
