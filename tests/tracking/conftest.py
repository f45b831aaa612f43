"""Fixtures of the tracking tests: a migrated empty store, a spool folder, and an
``mlflow server`` that a test can stop and start again on the same port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

SERVER_START_TIMEOUT_S = 90.0


@pytest.fixture(scope="session", autouse=True)
def spool_outside_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the default spool directory of every StudyLogger into a temporary folder."""
    directory = tmp_path_factory.mktemp("default-spool")
    previous = os.environ.get("TOPSELECT_SPOOL_DIR")
    os.environ["TOPSELECT_SPOOL_DIR"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("TOPSELECT_SPOOL_DIR", None)
    else:
        os.environ["TOPSELECT_SPOOL_DIR"] = previous


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store, migrated once; copying it skips MLflow's migrations."""
    path = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """An ``mlflow server`` (or ``mlflow ui``) on a fixed loopback port, restartable.

    Args:
        directory: Working directory and home of the log file.
        backend_store_uri: The server's sqlite store.
        artifacts_directory: Where it keeps proxied artifacts; ``None`` for ``mlflow ui``
            with the store's own artifact locations.
        command: ``"server"`` or ``"ui"``.
    """

    def __init__(
        self,
        directory: Path,
        backend_store_uri: str,
        artifacts_directory: Path | None = None,
        command: str = "server",
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend_store_uri = backend_store_uri
        self.artifacts_directory = artifacts_directory
        self.command = command
        self.log_path = directory / f"mlflow-{command}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the server and wait until ``/health`` responds."""
        command = [
            sys.executable, "-m", "mlflow", self.command, "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", self.backend_store_uri,
        ]  # fmt: skip
        if self.artifacts_directory is not None:
            command += ["--artifacts-destination", str(self.artifacts_directory)]
        # MLflow 3.17 starts a job runner with seven worker processes unless this is off.
        environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.directory,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_for_health()

    def _wait_for_health(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mlflow {self.command} exited early; log:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        pytest.fail(f"mlflow {self.command} did not answer in time; log:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL) and free the port."""
        if self.process is None:
            return
        group = self.process.pid
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(group):
            self.process.poll()
            time.sleep(0.1)
        if _group_alive(group):
            os.killpg(group, signal.SIGKILL)
        self.process.wait(timeout=timeout)
        self.process = None


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Return a function that starts a :class:`ServerProcess`; all are stopped at teardown."""
    started: list[ServerProcess] = []

    def start(
        backend_store_uri: str | None = None,
        *,
        command: str = "server",
        serve_artifacts: bool = True,
    ) -> ServerProcess:
        directory = tmp_path_factory.mktemp(f"mlflow-{command}")
        server = ServerProcess(
            directory,
            backend_store_uri or f"sqlite:///{directory / 'mlflow.db'}",
            directory / "artifacts" if serve_artifacts else None,
            command,
        )
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
