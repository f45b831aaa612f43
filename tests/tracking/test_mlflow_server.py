"""A tracked study logged to a local ``mlflow server`` and read back over its REST API.

The server (fixture ``mlflow_server``) proxies artifacts: clients upload and download
them through HTTP, and the server writes them to its own artifacts directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from optuna.trial import TrialState

from topselect.cli import cli

pytestmark = pytest.mark.server

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUDY_NAME = "served-study"
N_TRIALS = 3


@pytest.fixture(scope="module")
def client_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Working directory of the logging client, kept apart from the server's directory."""
    return tmp_path_factory.mktemp("client")


@pytest.fixture(scope="module")
def served_study(mlflow_server, run_tracked_study, client_directory: Path) -> optuna.Study:
    """Run a three-trial study (fitted, pruned, fitted) that logs to the server."""
    storage = f"sqlite:///{client_directory / 'optuna.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(client_directory)
        return run_tracked_study(STUDY_NAME, storage, mlflow_server.url, N_TRIALS)


def trial_run_ids(client: MlflowClient, study: optuna.Study) -> dict[int, str]:
    experiment = client.get_experiment_by_name(study.study_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`topselect.role` = 'trial'")
    return {int(run.info.run_name): run.info.run_id for run in runs}


def test_server_study_artifacts_over_rest(
    served_study: optuna.Study, mlflow_server, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.url)
    run_ids = trial_run_ids(client, served_study)
    completed = served_study.get_trials(states=(TrialState.COMPLETE,))

    assert sorted(run_ids) == list(range(N_TRIALS))
    assert len(completed) == 2
    for trial in completed:
        run_id = run_ids[trial.number]
        listed = {info.path for info in client.list_artifacts(run_id, "topselect")}
        assert {
            "topselect/diagram.json",
            "topselect/diagram.png",
            "topselect/landscape.png",
            "topselect/trajectory.json",
        } <= listed, f"trial {trial.number} has {sorted(listed)}"

        downloaded = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path="topselect",
                dst_path=str(tmp_path / "downloads" / run_id),
                tracking_uri=mlflow_server.url,
            )
        )
        diagram = json.loads((downloaded / "diagram.json").read_text(encoding="utf-8"))
        assert diagram["schema_version"] == 1
        assert [death for _, death in diagram["h0"]].count(None) == 1
        assert all(
            math.isfinite(value)
            for bar in diagram["h0"] + diagram["h1"]
            for value in bar
            if value is not None
        )
        for name in ("diagram.png", "landscape.png"):
            assert (downloaded / name).read_bytes()[:8] == PNG_MAGIC, name


def test_server_artifacts_stored_by_server(
    served_study: optuna.Study, mlflow_server, client_directory: Path
) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.url)
    run_ids = trial_run_ids(client, served_study)
    completed = served_study.get_trials(states=(TrialState.COMPLETE,))

    for run_id in run_ids.values():
        assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    stored = list(mlflow_server.artifacts_directory.rglob("topselect/diagram.json"))
    assert len(stored) == len(completed)
    # A client writing to its own ./mlruns would mean artifacts bypassed the server.
    assert not (client_directory / "mlruns").exists()


def test_server_trial_params_and_tags(served_study: optuna.Study, mlflow_server) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.url)
    run_ids = trial_run_ids(client, served_study)

    for trial in served_study.trials:
        run = client.get_run(run_ids[trial.number])
        own = {k: v for k, v in run.data.params.items() if not k.startswith("topselect.")}
        assert own == {name: str(value) for name, value in trial.params.items()}
        assert run.data.params["topselect.grid_size"].isdigit()
        assert run.data.tags["topselect.state"] == trial.state.name


def test_server_compare_reads_study(served_study: optuna.Study, mlflow_server) -> None:
    result = CliRunner().invoke(
        cli, ["compare", STUDY_NAME, "--tracking-uri", mlflow_server.url, "--format", "json"]
    )

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert sorted(row["trial"] for row in document["trials"]) == list(range(N_TRIALS))
