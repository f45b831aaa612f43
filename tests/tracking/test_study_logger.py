"""StudyLogger on fresh sqlite stores: where artifacts go and how a study run ends."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import socket
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

import topselect
from topselect.tracking import Spool


@pytest.fixture
def store_and_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_store: Path
) -> tuple[Path, Path]:
    """A store folder and a different working directory, which becomes the cwd.

    The folder contains migrated empty stores ``mlflow.db``, ``old.db`` and ``new.db``.
    """
    store, cwd = tmp_path / "store", tmp_path / "cwd"
    store.mkdir()
    cwd.mkdir()
    for name in ("mlflow.db", "old.db", "new.db"):
        shutil.copy(migrated_store, store / name)
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


def _copy_store(migrated_store: Path, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_store, directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


def _log_everything(logger: topselect.StudyLogger, run_id: str | None) -> None:
    """Write metrics at two steps, params, tags, one artifact of each type, and end."""
    logger.log_metrics(run_id, {"intermediate_value": 0.25}, step=0)
    logger.log_metrics(run_id, {"intermediate_value": 0.5}, step=1)
    logger.log_params(run_id, {"lr": 0.01})
    logger.set_tags(run_id, {"topselect.state": "COMPLETE"})
    figure = plt.figure()
    logger.log_artifacts(
        run_id,
        json_files={"a.json": {"schema_version": 1}},
        figures={"a.png": figure},
        files={"a.npz": _npz_bytes(), "a.csv": b"schema_version,x\n1,2\n"},
    )
    logger.end_run(run_id, "FINISHED")


def _npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, schema_version=np.int64(1))
    return buffer.getvalue()


SPOOLED_ARTIFACTS = ["topselect/a.csv", "topselect/a.json", "topselect/a.npz", "topselect/a.png"]


def _assert_everything_logged(uri: str, run_id: str) -> None:
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    history = client.get_metric_history(run_id, "intermediate_value")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.25), (1, 0.5)]
    assert run.data.params["lr"] == "0.01"
    assert run.data.tags["topselect.state"] == "COMPLETE"
    assert run.info.status == "FINISHED"
    listed = sorted(info.path for info in client.list_artifacts(run_id, "topselect"))
    assert listed == SPOOLED_ARTIFACTS


def test_unreachable_server_spools_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Removed here so the logger's own bounds apply; monkeypatch drops them again after.
    for name in ("MAX_RETRIES", "BACKOFF_FACTOR", "TIMEOUT"):
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{name}", raising=False)
    spool = tmp_path / "spool"
    logger = topselect.StudyLogger(f"http://127.0.0.1:{_closed_port()}", spool_dir=spool)
    study = optuna.create_study(study_name="offline")
    trial = study.ask()

    started = time.monotonic()
    run_id = logger.start_trial(study, trial)
    first = time.monotonic() - started
    started = time.monotonic()
    _log_everything(logger, run_id)
    rest = time.monotonic() - started

    assert run_id is not None and run_id.startswith("pending-")
    assert first < 15.0
    assert rest < 2.0
    warnings = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("topselect")
    ]
    assert len(warnings) == 1
    assert str(spool) in warnings[0].getMessage()
    assert "topselect sync" in warnings[0].getMessage()
    ops = (spool / run_id / "ops.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["op"] for line in ops]
    assert kinds == ["create_run", "log_batch", "log_artifacts", "set_terminated"]
    assert logger.spooled_operations == 4


def _spool_everything(spool: Spool, key: str, payload: Path) -> None:
    """Append the writes of ``_log_everything`` to ``spool`` as the logger would."""
    spool.append(
        key,
        {
            "op": "create_run",
            "experiment": "late store",
            "study_name": "late store",
            "run_name": "0",
            "tags": {"topselect.role": "trial", "topselect.pending_run_id": key},
            "start_time": 1_700_000_000_000,
        },
    )
    spool.append(
        key,
        {
            "op": "log_batch",
            "metrics": [
                ["intermediate_value", 0.25, 1_700_000_000_001, 0],
                ["intermediate_value", 0.5, 1_700_000_000_002, 1],
            ],
            "params": {"lr": "0.01"},
            "tags": {"topselect.state": "COMPLETE"},
        },
    )
    payload.mkdir()
    (payload / "a.json").write_text('{"schema_version": 1}')
    (payload / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (payload / "a.npz").write_bytes(_npz_bytes())
    (payload / "a.csv").write_text("schema_version,x\n1,2\n")
    spool.append(key, {"op": "log_artifacts", "artifact_path": "topselect"}, payload)
    spool.append(
        key, {"op": "set_terminated", "status": "FINISHED", "end_time": 1_700_000_001_000}
    )


def test_spool_replayed_in_order(tmp_path: Path, migrated_store: Path) -> None:
    uri = _copy_store(migrated_store, tmp_path / "store")
    spool = Spool(tmp_path / "spool", uri)
    pending = "pending-" + "0" * 32
    _spool_everything(spool, pending, tmp_path / "payload")
    logger = topselect.StudyLogger(uri, spool_dir=tmp_path / "spool")

    result = logger.sync()

    assert (result.runs, result.operations, result.remaining, result.errors) == (1, 4, 0, [])
    run_id = logger.resolve_run_id(pending)
    assert run_id != pending
    _assert_everything_logged(uri, run_id)
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.start_time == 1_700_000_000_000
    assert run.info.end_time == 1_700_000_001_000
    assert run.data.tags["topselect.pending_run_id"] == pending
    parent = MlflowClient(uri).get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["topselect.role"] == "study"
    assert spool.keys() == []


def test_spool_skips_other_tracking_uri(tmp_path: Path, migrated_store: Path) -> None:
    uri = _copy_store(migrated_store, tmp_path / "store")
    other = Spool(tmp_path / "spool", "http://127.0.0.1:1")
    _spool_everything(other, "pending-" + "1" * 32, tmp_path / "payload")

    result = topselect.StudyLogger(uri, spool_dir=tmp_path / "spool").sync()

    assert (result.runs, result.operations) == (0, 0)
    assert other.keys() == ["pending-" + "1" * 32]


def test_buffered_writes_sent_when_run_ends(tmp_path: Path, migrated_store: Path) -> None:
    uri = _copy_store(migrated_store, tmp_path)
    logger = topselect.StudyLogger(uri, spool_dir=tmp_path / "spool", flush_seconds=3600)
    study = optuna.create_study(study_name="buffered")
    run_id = logger.start_trial(study, study.ask())
    for step in range(5):
        logger.log_metrics(run_id, {"intermediate_value": step / 10}, step=step)
    client = MlflowClient(uri)

    assert "intermediate_value" not in client.get_run(run_id).data.metrics
    logger.end_run(run_id, "FINISHED")
    assert len(client.get_metric_history(run_id, "intermediate_value")) == 5


def test_batches_split_under_mlflow_limits(tmp_path: Path, migrated_store: Path) -> None:
    uri = _copy_store(migrated_store, tmp_path)
    logger = topselect.StudyLogger(uri, spool_dir=tmp_path / "spool", flush_seconds=3600)
    study = optuna.create_study(study_name="large batches")
    run_id = logger.start_trial(study, study.ask())
    logger.log_params(run_id, {f"p{i}": i for i in range(250)})
    logger.set_tags(run_id, {f"t{i}": i for i in range(150)})
    logger.log_metrics(run_id, {f"m{i}": float(i) for i in range(2500)})
    logger.end_run(run_id, "FINISHED")

    run = MlflowClient(uri).get_run(run_id)
    assert len([k for k in run.data.params if k.startswith("p")]) == 250
    assert len([k for k in run.data.tags if k.startswith("t") and k[1:].isdigit()]) == 150
    assert len([k for k in run.data.metrics if k.startswith("m")]) == 2500
    assert logger.spooled_operations == 0


@pytest.mark.parametrize("name", ["model.pkl", "weights.pt", "../escape.json", "/abs.json"])
def test_log_artifacts_rejects_other_types(
    tmp_path: Path, migrated_store: Path, name: str
) -> None:
    uri = _copy_store(migrated_store, tmp_path)
    logger = topselect.StudyLogger(uri, spool_dir=tmp_path / "spool")
    study = optuna.create_study(study_name="types")
    run_id = logger.start_trial(study, study.ask())

    with pytest.raises(topselect.InvalidInputError, match="artifact"):
        logger.log_artifacts(run_id, files={name: b"data"})
    assert MlflowClient(uri).list_artifacts(run_id) == []


def test_prepare_study_enables_wal(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    topselect.StudyLogger(uri, spool_dir=tmp_path / "spool").prepare_study(
        optuna.create_study(study_name="wal")
    )

    with closing(sqlite3.connect(tmp_path / "mlflow.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_png_artifact_carries_schema_version(tmp_path: Path, migrated_store: Path) -> None:
    from PIL import Image

    uri = _copy_store(migrated_store, tmp_path)
    logger = topselect.StudyLogger(uri, spool_dir=tmp_path / "spool")
    study = optuna.create_study(study_name="png")
    run_id = logger.start_trial(study, study.ask())
    logger.log_artifacts(run_id, figures={"a.png": plt.figure()})
    stored = next((tmp_path / "mlartifacts").rglob("a.png"))

    with Image.open(stored) as image:
        assert image.text["topselect.schema_version"] == "1"


def _finished_study(uri: str, tmp_path: Path) -> tuple[optuna.Study, str]:
    """Tell six trials with topselect attributes: classes c0 (0, 1, 3) and c2 (2, 4)."""
    study = optuna.create_study(
        study_name="report", direction="maximize", storage=f"sqlite:///{tmp_path / 'o.db'}"
    )
    logger = topselect.StudyLogger(uri, spool_dir=tmp_path / "spool")
    parent = logger.prepare_study(study)
    classes = ["c0", "c0", "c2", "c0", "c2", None]
    for number, class_id in enumerate(classes):
        trial = study.ask()
        trial.set_user_attr("topselect.class_id", class_id)
        trial.set_user_attr("topselect.fitted", class_id is not None)
        trial.set_user_attr("topselect.scores", {"basin_area_0.1": 0.1 * number})
        trial.set_user_attr("topselect.class_representative", number in (0, 2))
        trial.set_user_attr("topselect.probe_fingerprint", "abc")
        study.tell(trial, [0.9, 0.5, 0.7, 0.8, 0.6, 0.95][number])
    logger.finish_study(study)
    return study, parent


def _parent_artifact(uri: str, parent: str, name: str, directory: Path) -> Path:
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=parent,
            artifact_path=f"topselect/{name}",
            dst_path=str(directory),
            tracking_uri=uri,
        )
    )


def test_finish_study_class_table(tmp_path: Path, migrated_store: Path) -> None:
    uri = _copy_store(migrated_store, tmp_path)
    _, parent = _finished_study(uri, tmp_path)

    path = _parent_artifact(uri, parent, "classes.json", tmp_path / "down")
    document = json.loads(path.read_text())
    classes = {row["class_id"]: row for row in document["classes"]}

    assert document["schema_version"] == 1
    assert classes["c0"]["members"] == [0, 1, 3]
    assert classes["c0"]["representatives"] == [0]
    assert classes["c0"]["best_trial"] == 0
    assert classes["c0"]["value_spread"] == pytest.approx(0.4)
    assert classes["c2"]["members"] == [2, 4]
    assert document["unclassified"] == [5]
    rows = list(
        csv.reader(
            io.StringIO(_parent_artifact(uri, parent, "classes.csv", tmp_path / "c").read_text())
        )
    )
    assert rows[0][0] == "schema_version"
    assert {row[1] for row in rows[1:]} == {"c0", "c2"}


def test_finish_study_ranking_and_report(tmp_path: Path, migrated_store: Path) -> None:
    uri = _copy_store(migrated_store, tmp_path)
    study, parent = _finished_study(uri, tmp_path)
    expected = [entry.record.number for entry in topselect.rank_trials(study)]

    ranking = json.loads(_parent_artifact(uri, parent, "ranking.json", tmp_path / "r").read_text())
    report = json.loads(
        _parent_artifact(uri, parent, "selection_report.json", tmp_path / "s").read_text()
    )
    rows = list(
        csv.reader(
            io.StringIO(_parent_artifact(uri, parent, "ranking.csv", tmp_path / "c").read_text())
        )
    )

    assert [row["trial"] for row in ranking["trials"]] == expected
    assert [int(row[2]) for row in rows[1:]] == expected
    assert report["schema_version"] == 1
    assert report["best_by_value"]["trial"] == 5
    assert report["best_by_topselect"]["trial"] == expected[0]
    assert report["same_choice"] == (expected[0] == 5)
    assert report["trials_by_state"] == {"COMPLETE": 6}
    assert report["classes"] == 2
    assert report["probe_fingerprints"] == ["abc"]


def test_start_trial_reuses_callback_run(tmp_path: Path, migrated_store: Path) -> None:
    uri = _copy_store(migrated_store, tmp_path)
    study = optuna.create_study(study_name="callback", storage=f"sqlite:///{tmp_path / 'o.db'}")
    logger = topselect.StudyLogger(uri, spool_dir=tmp_path / "spool")
    logger.prepare_study(study)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("callback").experiment_id
    existing = client.create_run(experiment, run_name="0").info.run_id
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, "mlflow_run_id", existing)

    run_id = logger.start_trial(study, trial)
    logger.end_run(run_id, "FINISHED")

    assert run_id == existing
    tags = client.get_run(existing).data.tags
    assert tags["topselect.role"] == "trial"
    assert tags["number"] == "0"


@pytest.mark.filterwarnings("ignore:MLflowCallback has been deprecated:FutureWarning")
def test_mlflow_callback_logs_into_trial_run(tmp_path: Path, migrated_store: Path) -> None:
    from optuna_integration.mlflow import MLflowCallback

    uri = _copy_store(migrated_store, tmp_path)
    study = optuna.create_study(
        study_name="beside", direction="maximize", storage=f"sqlite:///{tmp_path / 'o.db'}"
    )
    logger = topselect.StudyLogger(uri, spool_dir=tmp_path / "spool")
    logger.prepare_study(study)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        run_id = logger.start_trial(study, trial)
        logger.log_metrics(run_id, {"topselect.basin_area_0.1": 0.5})
        logger.end_run(run_id, "FINISHED")
        return x

    study.optimize(objective, n_trials=3, callbacks=[MLflowCallback(tracking_uri=uri)])

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("beside").experiment_id
    runs = client.search_runs([experiment], "tags.`topselect.role` = 'trial'")
    all_runs = client.search_runs([experiment])
    assert len(runs) == 3
    assert len(all_runs) == 4  # three trial runs and the study run, no duplicates
    for run in runs:
        trial = study.trials[int(run.info.run_name)]
        assert run.data.tags["number"] == str(trial.number)
        assert run.data.tags["state"] == "COMPLETE"  # set by MLflowCallback
        assert run.data.metrics["value"] == pytest.approx(trial.value)
        assert run.data.metrics["topselect.basin_area_0.1"] == 0.5
