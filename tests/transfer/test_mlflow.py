"""Source weights in MLflow runs and transfer reports logged to MLflow, against real
sqlite stores under tmp paths."""

from __future__ import annotations

import json
import shutil
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
