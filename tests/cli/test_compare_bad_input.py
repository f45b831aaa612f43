"""``topselect compare``, ``show`` and ``sync`` on bad input: foreign runs, corrupt and
foreign artifacts, pickles, unknown names, unreachable servers, bad options."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from mlflow import MlflowClient

from topselect.cli import cli
from topselect.tracking import Spool


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_RETRIES", "BACKOFF_FACTOR", "TIMEOUT"):
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{name}", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def compare(study, *args: str) -> Result:
    return run("compare", "synthetic", "--tracking-uri", study.tracking_uri, *args)


def one_line_error(result: Result) -> str:
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output
    assert len(lines) == 1, result.output
    return lines[0]


def left_out(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Left out:")]


# -- runs without topselect data ------------------------------------------------------------


def test_compare_lists_runs_without_topselect_data(tmp_path: Path, migrated_store: Path) -> None:
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("callback-only")
    for number in range(3):
        run_id = client.create_run(experiment, run_name=str(number), tags={"number": str(number)})
        client.log_metric(run_id.info.run_id, "value", 0.1 * number)

    result = run("compare", "callback-only", "--tracking-uri", uri, "--format", "json")

    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert [row["topselect"] for row in document["trials"]] == [False] * 3
    assert {row["state"] for row in document["trials"]} == {"NO_TOPSELECT_DATA"}
    assert sorted(row["trial"] for row in document["trials"]) == [0, 1, 2]
    assert "contains no topselect study run" in result.stderr


def test_compare_foreign_run_beside_trials(synthetic_study) -> None:
    client = MlflowClient(synthetic_study.tracking_uri)
    experiment = client.get_experiment_by_name("synthetic").experiment_id
    foreign = client.create_run(
        experiment, run_name="mine", tags={"mlflow.parentRunId": synthetic_study.parent_run_id}
    ).info.run_id

    result = compare(synthetic_study, "--format", "json")

    assert result.exit_code == 1
    rows = {row["run_id"]: row for row in json.loads(result.stdout)["trials"]}
    assert rows[foreign]["topselect"] is False
    assert rows[foreign]["rank"] is None
    assert sum(row["topselect"] for row in rows.values()) == 5
    assert "1 of 6 runs carry no topselect data" in result.stderr


# -- corrupt and foreign artifacts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01 not json", "is not a readable JSON file"),
        (b'{"h0": [[0.0, null]], "h1": []}', "no integer schema_version"),
        (b'{"schema_version": 99, "h0": [], "h1": []}', "has schema_version 99"),
        (b'{"schema_version": 1, "h0": [["a", 1]], "h1": []}', "is not a topselect diagram"),
        (b"[1, 2, 3]", "is not a JSON object"),
    ],
)
def test_compare_bad_diagram_named_rest_compared(
    synthetic_study, content: bytes, message: str
) -> None:
    synthetic_study.artifact(1, "diagram.json").write_bytes(content)

    result = compare(synthetic_study, "--format", "json", "--distances", "sliced")

    assert result.exit_code == 1
    lines = left_out(result)
    assert len(lines) == 1
    assert synthetic_study.run_ids[1] in lines[0]
    assert "topselect/diagram.json" in lines[0]
    assert message in lines[0]
    document = json.loads(result.stdout)
    assert document["distances"][0]["trials"] == ["3", "2", "0"]
    assert document["problems"][0]["run_id"] == synthetic_study.run_ids[1]


def test_compare_missing_artifact_named(synthetic_study) -> None:
    synthetic_study.artifact(2, "probe_outputs.npz").unlink()

    result = compare(synthetic_study, "--format", "json", "--equivalence")

    assert result.exit_code == 1
    assert "topselect/probe_outputs.npz is missing" in left_out(result)[0]
    assert json.loads(result.stdout)["equivalence"]["trials"] == ["3", "1", "0"]


def test_compare_corrupt_npz_named(synthetic_study) -> None:
    synthetic_study.artifact(3, "probe_outputs.npz").write_bytes(b"PK\x03\x04 truncated")

    result = compare(synthetic_study, "--format", "json", "--equivalence")

    assert result.exit_code == 1
    line = left_out(result)[0]
    assert synthetic_study.run_ids[3] in line
    assert "is not a readable NPZ archive" in line
    assert json.loads(result.stdout)["equivalence"]["trials"] == ["2", "1", "0"]


# -- pickles ---------------------------------------------------------------------------------


class _CreatesFolder:
    """Unpickling this creates the folder ``path``, the trace of code run by ``pickle``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_pickle_payload_runs_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_CreatesFolder(marker)))
    assert marker.is_dir()


def test_compare_and_show_never_load_pickles(synthetic_study, tmp_path: Path) -> None:
    marker = tmp_path / "pickle-was-loaded"
    payload = pickle.dumps(_CreatesFolder(marker))
    synthetic_study.artifact(0, "probe_outputs.npz").write_bytes(payload)
    synthetic_study.artifact(1, "diagram.json").write_bytes(payload)
    object_npz = synthetic_study.artifact(2, "probe_outputs.npz")
    np.savez(
        object_npz, schema_version=np.int64(1), predictions=np.array([_CreatesFolder(marker)])
    )
    (synthetic_study.artifact(3, "evil.pkl")).write_bytes(payload)
    with np.load(object_npz, allow_pickle=False) as archive:
        with pytest.raises(ValueError, match="allow_pickle"):
            archive["predictions"]  # The array is pickled, so numpy refuses to load it.

    result = compare(
        synthetic_study,
        "--equivalence",
        "--distances",
        "sliced",
        "--plot",
        str(tmp_path / "p.png"),
    )
    shown = [
        run("show", synthetic_study.run_ids[n], "--tracking-uri", synthetic_study.tracking_uri)
        for n in range(4)
    ]

    assert not marker.exists()
    assert result.exit_code == 1
    lines = left_out(result)
    assert any(
        synthetic_study.run_ids[0] in line and "probe_outputs.npz" in line for line in lines
    )
    assert any(synthetic_study.run_ids[1] in line and "diagram.json" in line for line in lines)
    assert any(
        synthetic_study.run_ids[2] in line and "probe_outputs.npz" in line for line in lines
    )
    assert [r.exit_code for r in shown] == [1, 1, 1, 0]
    assert "topselect/evil.pkl" in shown[3].stdout  # listed as a file, never opened


# -- unknown names and bad options ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--sort", "valeu"), "--sort: unknown column 'valeu'. Did you mean 'value'?"),
        (("--equivalence", "--group-by", "optimiser"), "Did you mean 'optimizer'?"),
        (("--run-id", "0" * 32), f"run(s) not found in experiment 'synthetic': {'0' * 32}"),
        (("--parent-run", "f" * 32), "is not a study run of experiment 'synthetic'"),
        (("--tag", "novalue"), "--tag takes KEY=VALUE, but got 'novalue'"),
        (("--format", "csv", "--distances", "sliced"), "--format csv contains the ranking table"),
        (("--plot", "out.jpg"), "--plot writes a PNG file"),
        (("--distances", "euclid"), "Invalid value for '--distances'"),
    ],
)
def test_compare_usage_errors(shared_synthetic_study, args: tuple[str, ...], message: str) -> None:
    result = compare(shared_synthetic_study, *args)

    assert result.exit_code == 2
    assert message in result.output


def test_compare_unknown_experiment_near_match(shared_synthetic_study) -> None:
    result = run("compare", "synthetc", "--tracking-uri", shared_synthetic_study.tracking_uri)

    assert result.exit_code == 2
    assert "Did you mean 'synthetic'?" in one_line_error(result)


def test_compare_without_selection(shared_synthetic_study) -> None:
    result = run("compare", "--tracking-uri", shared_synthetic_study.tracking_uri)

    assert result.exit_code == 2
    assert "give an EXPERIMENT" in one_line_error(result)


def test_show_unknown_run(shared_synthetic_study) -> None:
    result = run("show", "0" * 32, "--tracking-uri", shared_synthetic_study.tracking_uri)

    assert result.exit_code == 2
    assert f"run '{'0' * 32}' not found" in one_line_error(result)


# -- unreachable servers ----------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("command", ["compare", "show"])
def test_closed_port_fails_fast_one_line(command: str) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    result = run(command, "synthetic" if command == "compare" else "0" * 32, "--tracking-uri", uri)
    elapsed = time.monotonic() - started

    assert result.exit_code == 1
    line = one_line_error(result)
    assert line.startswith(f"Error: could not read {uri}:")
    assert elapsed < 10.0


def test_silent_server_times_out_one_line() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # Accepts connections in the kernel, never responds.
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        result = run("compare", "synthetic", "--tracking-uri", uri, "--timeout", "2")
        elapsed = time.monotonic() - started

    assert result.exit_code == 1
    assert "could not read" in one_line_error(result)
    assert 2.0 <= elapsed < 12.0


# -- show and sync ---------------------------------------------------------------------------


def test_show_trial_run(shared_synthetic_study) -> None:
    run_id = shared_synthetic_study.run_ids[0]
    result = run(
        "show", run_id, "--tracking-uri", shared_synthetic_study.tracking_uri, "--format", "json"
    )

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["role"] == "trial"
    assert document["state"] == "COMPLETE"
    assert {a["path"] for a in document["artifacts"]} == {
        "topselect/diagram.json",
        "topselect/probe_outputs.npz",
    }
    assert document["diagram"]["h0"]["essential_bars"] == 1
    assert document["probe_outputs"]["examples"] == 32
    assert document["probe_outputs"]["feature_dim"] == 16
    table = run("show", run_id, "--tracking-uri", shared_synthetic_study.tracking_uri)
    assert table.exit_code == 0
    assert "Persistence diagram" in table.stdout


def test_show_run_without_topselect_data(synthetic_study) -> None:
    client = MlflowClient(synthetic_study.tracking_uri)
    experiment = client.get_experiment_by_name("synthetic").experiment_id
    foreign = client.create_run(experiment).info.run_id

    result = run("show", foreign, "--tracking-uri", synthetic_study.tracking_uri)

    assert result.exit_code == 1
    assert "carries no topselect data" in result.stderr


def test_sync_empty_spool(tmp_path: Path) -> None:
    result = run("sync", "--spool-dir", str(tmp_path))

    assert result.exit_code == 0
    assert "Nothing to upload" in result.stdout


def test_sync_uploads_spool(synthetic_study, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", synthetic_study.tracking_uri)
    run_id = synthetic_study.run_ids[0]
    spool.append(
        run_id, {"op": "log_batch", "metrics": [["late", 1.5, 1, 0]], "params": {}, "tags": {}}
    )

    result = run("sync", "--spool-dir", str(tmp_path / "spool"))

    assert result.exit_code == 0, result.output
    assert "uploaded 1 writes of 1 runs; 0 runs remain" in result.stdout
    assert MlflowClient(synthetic_study.tracking_uri).get_run(run_id).data.metrics["late"] == 1.5


def test_sync_unreachable_keeps_spool(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    spool = Spool(tmp_path / "spool", uri)
    spool.append("0" * 32, {"op": "set_terminated", "status": "FINISHED", "end_time": 1})
    started = time.monotonic()

    result = run("sync", "--spool-dir", str(tmp_path / "spool"))

    assert result.exit_code == 1
    assert "0 writes of 0 runs; 1 runs remain" in result.stdout
    assert "Upload stopped" in result.stderr
    assert spool.keys() == ["0" * 32]
    assert time.monotonic() - started < 10.0


# -- tracking URIs MLflow cannot open ------------------------------------------------------


@pytest.mark.parametrize("command", ["compare", "show"])
def test_unsupported_uri_scheme_one_line(command: str) -> None:
    result = run(command, "anything", "--tracking-uri", "bogus://x")

    assert result.exit_code == 2
    line = one_line_error(result)
    assert "no tracking store for the URI 'bogus://x'" in line
    assert "sqlite:///" in line


def test_unsupported_uri_scheme_api_error() -> None:
    from topselect.exceptions import TrackingError
    from topselect.tracking._uri import mlflow_client

    with pytest.raises(TrackingError, match=r"no tracking store for the URI 'htp://host'"):
        mlflow_client("htp://host")
