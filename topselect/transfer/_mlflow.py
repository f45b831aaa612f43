"""Source models from MLflow runs, and transfer reports written to MLflow.

Weights are stored as safetensors (raw tensors and a JSON header), and read from
safetensors or from PyTorch files with ``torch.load(weights_only=True)``, so loading a
model from a shared artifact store never unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topselect.exceptions import InvalidInputError, TrackingError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from topselect.transfer._report import TransferReport

__all__ = [
    "MODEL_ARTIFACT",
    "TRANSFER_EXPERIMENT",
    "load_model_weights",
    "load_state_dict_file",
    "log_transfer",
    "save_model_weights",
]

_logger = logging.getLogger(__name__)

#: Artifact path of a model's weights written by :func:`save_model_weights`.
MODEL_ARTIFACT = "topselect/model.safetensors"
#: Experiment of the runs :func:`log_transfer` creates when given no run.
TRANSFER_EXPERIMENT = "topselect-transfer"
_FORMAT = "topselect.state_dict"
_SCHEMA_VERSION = "1"
_METRIC_PREFIX = "topselect.transfer."


def _client(tracking_uri: str | None) -> tuple[str, Any]:
    from topselect.tracking import resolve_tracking_uri
    from topselect.tracking._uri import mlflow_client

    uri = resolve_tracking_uri(tracking_uri)
    return uri, mlflow_client(uri)


def save_model_weights(model: nn.Module, run_id: str, *, tracking_uri: str | None = None) -> str:
    """Upload ``model.state_dict()`` to a run as ``topselect/model.safetensors``.

    Tensors are copied to the CPU; tied tensors are stored once per name. The file's
    metadata carries ``format`` and ``schema_version``.

    Args:
        model: The model whose parameters and buffers are stored.
        run_id: MLflow run that receives the artifact.
        tracking_uri: MLflow tracking URI; ``$MLFLOW_TRACKING_URI`` or
            ``sqlite:///<cwd>/mlflow.db`` when ``None``.

    Returns:
        The artifact's ``runs:/<run_id>/topselect/model.safetensors`` URI.

    Raises:
        TrackingError: When the upload fails.
    """
    from safetensors.torch import save_file

    state = {
        name: t.detach().to("cpu").clone().contiguous() for name, t in model.state_dict().items()
    }
    uri, client = _client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="topselect-") as tmp:
        path = Path(tmp) / Path(MODEL_ARTIFACT).name
        save_file(
            state, str(path), metadata={"format": _FORMAT, "schema_version": _SCHEMA_VERSION}
        )
        try:
            client.log_artifact(run_id, str(path), artifact_path=str(Path(MODEL_ARTIFACT).parent))
        except Exception as error:  # MLflow raises many types; all mean the upload failed.
            raise TrackingError(
                f"could not upload the model weights to run {run_id} at {uri}: {error}"
            ) from error
    return f"runs:/{run_id}/{MODEL_ARTIFACT}"


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file, or a ``.pt``/``.pth`` file with
    ``torch.load(weights_only=True)``, onto the CPU.

    Raises:
        InvalidInputError: For another suffix, a missing or corrupt file, or a PyTorch
            file that is not a flat mapping of names to tensors.
    """
    import torch

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".pt", ".pth"):
        raise InvalidInputError(
            f"weights file {path.name!r} must end in .safetensors, .pt or .pth; other "
            f"formats could run code when loaded."
        )
    if not path.exists():
        raise InvalidInputError(f"weights file {path} not found; check the path.")
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as error:
            raise InvalidInputError(
                f"{path} is not a readable safetensors file: {error}"
            ) from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or OSError here.
        raise InvalidInputError(
            f"{path} could not be loaded with torch.load(weights_only=True): {error}. Save "
            f"the model's state_dict(), not the model object."
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidInputError(
            f"{path} contains a {type(state).__name__}, not a mapping of names to tensors; save "
            f"model.state_dict()."
        )
    return state


def _check_run(run_id: str, tracking_uri: str, client: Any) -> None:
    """Raise unless the run exists, with one message for a run that is not found and
    another for a tracking store that cannot be read."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        client.get_run(run_id)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise TrackingError(
                f"run {run_id} not found at {tracking_uri}; check the run id and the tracking URI."
            ) from error
        raise TrackingError(
            f"could not read run {run_id} from {tracking_uri}: {error}. Check that the "
            f"tracking server is running and the tracking URI is right."
        ) from error
    except Exception as error:  # Any other error of the store also means no run was read.
        raise TrackingError(
            f"could not read run {run_id} from {tracking_uri}: {error}. Check that the "
            f"tracking store is reachable and the tracking URI is right."
        ) from error


def _download(
    run_id: str, artifact_path: str, tracking_uri: str, client: Any, folder: str
) -> Path:
    import mlflow

    _check_run(run_id, tracking_uri, client)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{run_id}/{artifact_path}",
            dst_path=folder,
            tracking_uri=tracking_uri,
        )
    except Exception as error:  # MLflow raises many types for a missing file.
        reason = str(error).rstrip(".")
        parent = str(Path(artifact_path).parent)
        try:
            listed = [
                a.path for a in client.list_artifacts(run_id, None if parent == "." else parent)
            ]
        except Exception as list_error:  # The artifact store itself may be unreachable.
            raise TrackingError(
                f"could not download {artifact_path!r} from run {run_id} at "
                f"{tracking_uri}: {reason}. Listing the run's artifacts failed too: "
                f"{list_error}"
            ) from error
        if artifact_path in listed:
            hint = "The file exists, so check access to the run's artifact store."
        elif listed:
            hint = (
                "Save the weights with topselect.transfer.save_model_weights, or pass "
                "artifact_path= with one of the listed files."
            )
        else:
            hint = "Save the weights with topselect.transfer.save_model_weights."
        raise TrackingError(
            f"could not download {artifact_path!r} from run {run_id} at {tracking_uri}: "
            f"{reason}. Artifacts there: {listed or 'none'}. {hint}"
        ) from error
    return Path(local)


def load_model_weights(
    model: nn.Module,
    run_id: str,
    *,
    tracking_uri: str | None = None,
    artifact_path: str = MODEL_ARTIFACT,
) -> nn.Module:
    """Load weights that a run logged into ``model`` (in place) and return it.

    ``model`` must have the architecture that was saved; its tensors keep their device
    and dtype. See :func:`load_state_dict_file` for the file types read.

    Args:
        model: A freshly built model of the source architecture.
        run_id: MLflow run that contains the weights.
        tracking_uri: MLflow tracking URI (default as in :func:`save_model_weights`).
        artifact_path: The weights' path inside the run's artifacts.

    Raises:
        TrackingError: When the run is not found, the tracking store cannot be read, or
            the artifact cannot be downloaded. For a missing file the message lists the
            artifacts that exist.
        InvalidInputError: For an unsafe or corrupt file, or weights whose names or
            shapes do not match ``model``.
    """
    uri, client = _client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="topselect-") as tmp:
        state = load_state_dict_file(_download(run_id, artifact_path, uri, client, tmp))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise InvalidInputError(
            f"the weights in run {run_id} ({artifact_path}) do not fit the model: {error}. "
            f"Build the model with the source architecture before loading."
        ) from error
    _logger.info("Loaded %d tensors from run %s (%s).", len(state), run_id, artifact_path)
    return model


def _experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    from topselect.tracking._uri import sqlite_path

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    # Keep a sqlite store's artifacts beside it, as StudyLogger does, instead of ./mlruns.
    path = sqlite_path(tracking_uri)
    location = None
    if path is not None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        location = (path.resolve().parent / "mlartifacts" / safe).as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def log_transfer(
    report: TransferReport,
    run_id: str | None = None,
    *,
    tracking_uri: str | None = None,
    experiment: str = TRANSFER_EXPERIMENT,
) -> str:
    """Write a transfer report to an MLflow run and return the run id.

    Writes ``topselect/transfer.json`` (:meth:`TransferReport.to_json`) and
    ``topselect/transfer.png`` (see :func:`topselect.transfer.transfer_figure`), every
    value of :meth:`TransferReport.metrics` as a metric ``topselect.transfer.<key>``, and
    the tags ``topselect.transfer.layer`` and ``topselect.transfer.head``. Settings go
    into the JSON, not into params, because MLflow params cannot change once logged
    and a run may be transferred more than once (a later report replaces the files and
    the latest metric values).

    Args:
        report: The comparison to log.
        run_id: Run to write to, for example the source model's trial run; its status is
            left as it is. ``None`` creates a run named ``transfer`` in ``experiment``,
            tagged ``topselect.role=transfer``, and ends it ``FINISHED``.
        tracking_uri: MLflow tracking URI (default as in :func:`save_model_weights`).
        experiment: Experiment of a created run.

    Raises:
        InvalidInputError: When ``report`` is not a :class:`TransferReport`.
        TrackingError: When the store cannot be reached or written.
    """
    from mlflow.entities import Metric, RunTag

    from topselect.tracking._artifacts import SCHEMA_VERSION, png_bytes
    from topselect.transfer._figure import transfer_figure
    from topselect.transfer._report import TransferReport

    if not isinstance(report, TransferReport):
        got = "None" if report is None else f"a {type(report).__name__}"
        raise InvalidInputError(
            f"report must be the TransferReport that evaluate_transfer returns, but got "
            f"{got}; pass the result of topselect.transfer.evaluate_transfer."
        )
    document = report.to_json()
    figure = transfer_figure(report)
    try:
        image = png_bytes(figure)
    finally:
        figure.clear()
    uri, client = _client(tracking_uri)
    created = run_id is None
    try:
        if run_id is None:
            tags = {"topselect.role": "transfer", "topselect.schema_version": str(SCHEMA_VERSION)}
            if report.source.get("run_id"):
                tags["topselect.transfer.source_run_id"] = str(report.source["run_id"])
            run = client.create_run(
                _experiment_id(client, experiment, uri), tags=tags, run_name="transfer"
            )
            run_id = run.info.run_id
        timestamp = _now_ms()
        metrics = [
            Metric(_METRIC_PREFIX + key, value, timestamp, 0)
            for key, value in report.metrics().items()
        ]
        chosen = report.pullback.chosen
        tags_list = [
            RunTag(_METRIC_PREFIX + "layer", chosen.layer),
            RunTag(_METRIC_PREFIX + "head", chosen.head),
        ]
        client.log_batch(run_id, metrics=metrics, tags=tags_list)
        with tempfile.TemporaryDirectory(prefix="topselect-") as tmp:
            folder = Path(tmp)
            (folder / "transfer.json").write_text(json.dumps(document, allow_nan=False, indent=1))
            (folder / "transfer.png").write_bytes(image)
            client.log_artifacts(run_id, str(folder), artifact_path="topselect")
        if created:
            client.set_terminated(run_id, "FINISHED")
    except Exception as error:  # MLflow raises many types; all mean the store failed.
        raise TrackingError(
            f"could not log the transfer report to run {run_id} at {uri}: {error}"
        ) from error
    _logger.info("Logged the transfer report to run %s at %s.", run_id, uri)
    return str(run_id)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
