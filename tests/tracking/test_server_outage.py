"""A tracked study that loses its ``mlflow server`` in the middle, and the MLflow UI on
the demo's store, checked through the server's REST endpoints.

Every test here starts servers and takes 20-80 s on two cores, so all are marked slow.
The outage test stops the server after trial 0 and starts it again after trial 2, on the
same port. Trials 1 and 2 run with no server: their runs are created from the spool when
``finish_study`` uploads it.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner
from mlflow import MlflowClient
from optuna.trial import TrialState

import topselect
from topselect.cli import cli

pytestmark = pytest.mark.server

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMPLETED = {
    "topselect/diagram.json", "topselect/diagram.png", "topselect/landscape.json",
    "topselect/landscape.png", "topselect/landscape_plane.json",
    "topselect/landscape_plane.png", "topselect/trajectory.json", "topselect/trajectory.png",
    "topselect/probe_outputs.npz",
}  # fmt: skip
PRUNED = {"topselect/trajectory.json", "topselect/trajectory.png", "topselect/probe_outputs.npz"}
OUTAGE_PARAMS = (
    {"optimizer": "adam", "lr": 0.02, "width": 64},
    {"optimizer": "sgd", "lr": 0.001, "width": 32},
    {"optimizer": "adam", "lr": 0.03, "width": 64},
    {"optimizer": "sgd", "lr": 0.1, "width": 64},
)


def expected_artifacts(trial: optuna.trial.FrozenTrial) -> set[str]:
    names = set(COMPLETED if trial.state == TrialState.COMPLETE else PRUNED)
    if trial.user_attrs.get("topselect.class_representative"):
        names.add("topselect/waypoints.safetensors")
    return names


@pytest.mark.slow
def test_study_survives_server_outage(
    start_server,
    make_objective,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    server = start_server()
    logger = topselect.StudyLogger(server.url, spool_dir=tmp_path / "spool", retry_seconds=1)
    study = optuna.create_study(
        study_name="outage",
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        direction="maximize",
        sampler=topselect.TopologicalSampler(optuna.samplers.TPESampler(seed=0)),
        pruner=topselect.TopologicalPruner(
            optuna.pruners.ThresholdPruner(lower=0.3, n_warmup_steps=1)
        ),
    )
    for params in OUTAGE_PARAMS:
        study.enqueue_trial(params)
    logger.prepare_study(study)
    outage: dict[str, float] = {}

    def stop_then_restart(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.number == 0:
            server.stop()
            outage["stopped"] = time.monotonic()
        if trial.number == 2:
            outage["seconds"] = time.monotonic() - outage["stopped"]
            server.start()

    torch.manual_seed(0)
    study.optimize(make_objective(logger, 4), n_trials=4, callbacks=[stop_then_restart])
    logger.finish_study(study)

    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name("outage").experiment_id
    runs = client.search_runs([experiment], "tags.`topselect.role` = 'trial'")
    by_number = {int(run.data.tags["topselect.trial_number"]): run for run in runs}
    assert sorted(by_number) == [0, 1, 2, 3]
    assert {t.state for t in study.trials} == {TrialState.COMPLETE, TrialState.PRUNED}
    for trial in study.trials:
        run = by_number[trial.number]
        listed = {info.path for info in client.list_artifacts(run.info.run_id, "topselect")}
        assert listed == expected_artifacts(trial), f"trial {trial.number}"
        history = client.get_metric_history(run.info.run_id, "intermediate_value")
        assert len(history) == len(trial.intermediate_values), f"trial {trial.number}"
        expected_status = "FINISHED" if trial.state == TrialState.COMPLETE else "KILLED"
        assert run.info.status == expected_status
    for number in (1, 2):  # created from the spool
        assert by_number[number].data.tags["topselect.pending_run_id"].startswith("pending-")
    assert list((tmp_path / "spool").glob("*/ops.jsonl")) == []
    parent = client.get_run(study.user_attrs["topselect.mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    warnings = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("topselect")
    ]
    assert [r.name for r in warnings if "spooled" in r.getMessage()] == [
        "topselect.tracking._writer"
    ]
    assert outage["seconds"] > 0


@pytest.mark.slow
def test_sync_command_uploads_after_restart(
    start_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = start_server()
    server.stop()
    logger = topselect.StudyLogger(server.url, spool_dir=tmp_path / "spool")
    study = optuna.create_study(study_name="offline-then-sync")
    pending = logger.start_trial(study, study.ask())
    logger.log_metrics(pending, {"intermediate_value": 0.5}, step=3)
    logger.log_artifacts(pending, json_files={"note.json": {"schema_version": 1}})
    logger.end_run(pending, "FINISHED")
    spool = ["sync", "--spool-dir", str(tmp_path / "spool")]

    offline = CliRunner().invoke(cli, spool)
    server.start()
    online = CliRunner().invoke(cli, spool)

    assert offline.exit_code == 1
    assert online.exit_code == 0, online.output
    assert "0 runs remain" in online.stdout
    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name("offline-then-sync").experiment_id
    (run,) = client.search_runs([experiment], f"tags.`topselect.pending_run_id` = '{pending}'")
    assert run.data.metrics["intermediate_value"] == 0.5
    assert [a.path for a in client.list_artifacts(run.info.run_id, "topselect")] == [
        "topselect/note.json"
    ]


def get(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.headers.get("Content-Type", ""), response.read()


@pytest.mark.slow
def test_mlflow_ui_previews_demo_artifacts(
    start_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    demo = CliRunner().invoke(cli, ["demo", "--trials", "2", "--epochs", "3", "--grid-size", "5"])
    assert demo.exit_code == 0, demo.output
    ui = start_server(f"sqlite:///{tmp_path / 'mlflow.db'}", command="ui", serve_artifacts=False)

    _, body = get(
        f"{ui.url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=topselect-demo"
    )
    experiment = json.loads(body)["experiment"]["experiment_id"]
    request = urllib.request.Request(
        f"{ui.url}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        runs = json.loads(response.read())["runs"]
    tags = {
        run["info"]["run_id"]: {t["key"]: t["value"] for t in run["data"]["tags"]} for run in runs
    }
    completed = [r for r, t in tags.items() if t.get("topselect.state") == "COMPLETE"]
    parent = next(r for r, t in tags.items() if t.get("topselect.role") == "study")
    assert completed

    for run_id, names in ((completed[0], ("diagram", "landscape", "trajectory")), (parent, ())):
        query = urllib.parse.urlencode({"run_id": run_id, "path": "topselect"})
        _, body = get(f"{ui.url}/api/2.0/mlflow/artifacts/list?{query}")
        listed = {f["path"] for f in json.loads(body)["files"]}
        for name in names:
            assert {f"topselect/{name}.png", f"topselect/{name}.json"} <= listed
            kind, data = get(artifact_url(ui.url, run_id, f"topselect/{name}.png"))
            assert kind.startswith("image/png")
            assert data[:8] == PNG_MAGIC
            kind, data = get(artifact_url(ui.url, run_id, f"topselect/{name}.json"))
            # MLflow 3.17 serves text artifacts as text/plain; the UI previews by suffix.
            assert kind.startswith(("application/json", "text/plain"))
            assert json.loads(data)["schema_version"] >= 1
        if run_id == parent:
            assert {"topselect/selection_report.json", "topselect/ranking.csv"} <= listed
            kind, data = get(artifact_url(ui.url, run_id, "topselect/selection_report.json"))
            assert json.loads(data)["study"] == "topselect-demo"


def artifact_url(base: str, run_id: str, path: str) -> str:
    return f"{base}/get-artifact?" + urllib.parse.urlencode({"path": path, "run_uuid": run_id})
