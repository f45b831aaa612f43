"""Source weights in MLflow runs and transfer reports logged to MLflow, against real
sqlite stores under tmp paths."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch
from mlflow import MlflowClient
from torch import nn

import topselect
from topselect.transfer import (
    MODEL_ARTIFACT,
    TRANSFER_EXPERIMENT,
    evaluate_transfer,
    load_model_weights,
    load_state_dict_file,
    log_transfer,
    pullback_transfer,
    save_model_weights,
)


@pytest.fixture(scope="module")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store, migrated once; copying it skips MLflow's migrations."""
    path = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, migrated_store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh copy of the migrated sqlite store; the working directory is ``tmp_path``, so
    an artifact folder MLflow might create under ./mlruns stays there."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def run_id(tracking_uri: str) -> str:
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("source")
    return client.create_run(experiment, run_name="source").info.run_id


def artifact_dir(tracking_uri: str, run_id: str) -> Path:
    run = MlflowClient(tracking_uri).get_run(run_id)
    return Path(unquote(urlparse(run.info.artifact_uri).path))


def test_weights_round_trip(
    source_model: nn.Module, untrained_source: nn.Module, tracking_uri: str, run_id: str
) -> None:
    uri = save_model_weights(source_model, run_id, tracking_uri=tracking_uri)
    assert uri == f"runs:/{run_id}/{MODEL_ARTIFACT}"
    fresh = untrained_source
    assert not torch.equal(fresh.state_dict()["0.weight"], source_model.state_dict()["0.weight"])
    load_model_weights(fresh, run_id, tracking_uri=tracking_uri)
    for name, tensor in source_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def test_weights_wrong_architecture_raise(
    source_model: nn.Module, tracking_uri: str, run_id: str
) -> None:
    save_model_weights(source_model, run_id, tracking_uri=tracking_uri)
    other = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 5))
    with pytest.raises(topselect.InvalidInputError, match="do not fit the model"):
        load_model_weights(other, run_id, tracking_uri=tracking_uri)


def test_missing_weights_list_artifacts(
    untrained_source: nn.Module, tracking_uri: str, run_id: str
) -> None:
    with pytest.raises(topselect.TrackingError, match="Artifacts there: none"):
        load_model_weights(untrained_source, run_id, tracking_uri=tracking_uri)


def test_pt_file_loads_weights_only(source_model: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(source_model.state_dict(), path)
    state = load_state_dict_file(path)
    assert set(state) == set(source_model.state_dict())


def test_pickled_module_rejected(source_model: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(source_model, path)  # A whole module needs unpickling of arbitrary classes.
    with pytest.raises(topselect.InvalidInputError, match=r"torch.load\(weights_only=True\)"):
        load_state_dict_file(path)


def test_unsafe_suffix_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"not read")
    with pytest.raises(topselect.InvalidInputError, match="must end in .safetensors, .pt or .pth"):
        load_state_dict_file(path)


def test_log_transfer_to_source_run(
    source_model: nn.Module, target, fast_config, tracking_uri: str, run_id: str
) -> None:
    report = evaluate_transfer(
        source_model, target, config=fast_config, source_info={"run_id": run_id}
    )
    logged = log_transfer(report, run_id, tracking_uri=tracking_uri)
    assert logged == run_id
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.info.status == "RUNNING"
    metrics = run.data.metrics
    assert metrics["topselect.transfer.accuracy"] == report.pullback.test_accuracy
    assert metrics["topselect.transfer.accuracy_ratio"] == report.accuracy_ratio
    assert metrics["topselect.transfer.time_saving"] == report.time_saving
    assert run.data.tags["topselect.transfer.layer"] == report.pullback.chosen.layer
    folder = artifact_dir(tracking_uri, run_id) / "topselect"
    document = json.loads((folder / "transfer.json").read_text())
    assert document["schema_version"] == 1
    assert [row["layer"] for row in document["layers"]] == ["1", "3"]
    assert document["ratios"]["accuracy_ratio"] == report.accuracy_ratio
    assert (folder / "transfer.png").read_bytes().startswith(b"\x89PNG")


def test_log_transfer_creates_run(
    source_model: nn.Module, target, fast_config, tracking_uri: str, tmp_path: Path
) -> None:
    report = evaluate_transfer(source_model, target, config=fast_config, baselines=["finetune"])
    run_id = log_transfer(report, tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["topselect.role"] == "transfer"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == TRANSFER_EXPERIMENT
    assert artifact_dir(tracking_uri, run_id).is_relative_to(tmp_path / "mlartifacts")
    assert not (tmp_path / "mlruns").exists()


def test_log_transfer_unknown_run_raises(
    source_model: nn.Module, target, fast_config, tracking_uri: str
) -> None:
    report = evaluate_transfer(source_model, target, config=fast_config, baselines=["finetune"])
    with pytest.raises(topselect.TrackingError, match="could not log the transfer report"):
        log_transfer(report, "0123456789abcdef", tracking_uri=tracking_uri)


def test_missing_weights_suggest_saving(
    untrained_source: nn.Module, tracking_uri: str, run_id: str
) -> None:
    with pytest.raises(topselect.TrackingError) as raised:
        load_model_weights(untrained_source, run_id, tracking_uri=tracking_uri)
    message = str(raised.value)
    assert "save_model_weights" in message
    assert ".." not in message


def test_wrong_artifact_path_lists_files(
    source_model: nn.Module, untrained_source: nn.Module, tracking_uri: str, run_id: str
) -> None:
    save_model_weights(source_model, run_id, tracking_uri=tracking_uri)
    match = (
        r"Artifacts there: \['topselect/model.safetensors'\]\. Save the weights with "
        r"topselect.transfer.save_model_weights, or pass artifact_path= with one of"
    )
    with pytest.raises(topselect.TrackingError, match=match):
        load_model_weights(
            untrained_source,
            run_id,
            tracking_uri=tracking_uri,
            artifact_path="topselect/weights.safetensors",
        )


def test_unknown_run_weights_not_found(untrained_source: nn.Module, tracking_uri: str) -> None:
    with pytest.raises(
        topselect.TrackingError, match="run 0123456789abcdef not found at"
    ) as raised:
        load_model_weights(untrained_source, "0123456789abcdef", tracking_uri=tracking_uri)
    assert "save_model_weights" not in str(raised.value)


def test_unreachable_server_weights_raise(
    untrained_source: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as listener:  # Take a free port, then close it so nothing listens.
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{port}"
    match = rf"could not read run 0123456789abcdef from {uri}: .*Check that the tracking server"
    with pytest.raises(topselect.TrackingError, match=match) as raised:
        load_model_weights(untrained_source, "0123456789abcdef", tracking_uri=uri)
    assert "save_model_weights" not in str(raised.value)


def test_missing_local_file_not_found(tmp_path: Path) -> None:
    for name in ("model.safetensors", "model.pt"):
        path = tmp_path / name
        with pytest.raises(topselect.InvalidInputError, match=f"weights file .*{name} not found"):
            load_state_dict_file(path)


@pytest.mark.parametrize("report", [None, {"accuracy": 0.9}])
def test_log_transfer_rejects_non_report(report, tracking_uri: str) -> None:
    match = "report must be the TransferReport that evaluate_transfer returns"
    with pytest.raises(topselect.InvalidInputError, match=match):
        log_transfer(report, tracking_uri=tracking_uri)  # type: ignore[arg-type]


def test_log_transfer_rejects_pullback_result(
    source_model: nn.Module, target, tracking_uri: str
) -> None:
    result = pullback_transfer(source_model, target)
    with pytest.raises(topselect.InvalidInputError, match="but got a PullbackResult"):
        log_transfer(result, tracking_uri=tracking_uri)  # type: ignore[arg-type]


def test_unsupported_uri_scheme_raises_tracking_error() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))

    with pytest.raises(
        topselect.TrackingError, match=r"no tracking store for the URI 'bogus://x'"
    ):
        load_model_weights(model, "0" * 32, tracking_uri="bogus://x")
