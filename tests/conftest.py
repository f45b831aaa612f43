"""Shared fixtures: small digits MLPs, a probe set, and real Optuna and MLflow stores.

Every store lives under pytest's temporary directory: Optuna studies in sqlite files (the
in-memory storage accepts attributes that RDB storages reject), MLflow runs in sqlite
tracking stores, or behind a local ``mlflow server`` process for ``@pytest.mark.server``
tests. Nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import topselect
from topselect.datasets import DataSplit, load_digits_split

SEED = 0
PROBE_SIZE = 128
GRID_SIZE = 9
EPOCHS = 6
BATCH_SIZE = 64
# ThresholdPruner prunes a trial whose validation accuracy is below this after the warmup.
PRUNE_BELOW_ACCURACY = 0.3
PRUNE_WARMUP_STEPS = 2

# Trials enqueued in the shared study, so that its outcomes do not depend on what TPE
# samples. Measured on CPU with torch 2.13 and these seeds: Adam at 0.02 and 0.03 reaches
# a probe-set loss of 0.08 and 0.06 (fitted, below TrackerConfig.fit_loss = 0.1), plain
# SGD at 1e-3 stays at chance accuracy and is pruned, and SGD at 0.1 completes unfitted
# (loss 1.2, accuracy 0.88).
FITTED_PARAMS = {"optimizer": "adam", "lr": 0.02, "width": 64}
PRUNED_PARAMS = {"optimizer": "sgd", "lr": 0.001, "width": 32}
UNFITTED_PARAMS = {"optimizer": "sgd", "lr": 0.1, "width": 64}
ENQUEUED_PARAMS = (
    FITTED_PARAMS,
    PRUNED_PARAMS,
    {"optimizer": "adam", "lr": 0.03, "width": 64},
    UNFITTED_PARAMS,
)
SHARED_STUDY_TRIALS = 6
# Sampler weight of the shared study: positive, so that rankings and MLflow records carry
# flatness adjustments (the library's default weight is 0).
TRACKED_WEIGHT = 0.01


# -- slow tests ------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="Run tests marked @pytest.mark.slow (skipped by default).",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: pass --run-slow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


# -- data and models -------------------------------------------------------------------


@pytest.fixture(scope="session")
def digits() -> DataSplit:
    """scikit-learn's handwritten digits, split with a fixed seed."""
    return load_digits_split(seed=SEED)


@pytest.fixture(scope="session")
def probe(digits: DataSplit) -> topselect.ProbeSet:
    """A seeded probe set of ``PROBE_SIZE`` training examples."""
    return topselect.make_probe_set(digits.x_train, digits.y_train, size=PROBE_SIZE, seed=SEED)


def build_mlp(n_features: int, n_classes: int, width: int, seed: int = SEED) -> nn.Module:
    """Return a one-hidden-layer ReLU MLP whose initialization depends on ``seed`` only."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(n_features, width), nn.ReLU(), nn.Linear(width, n_classes))
    finally:
        torch.random.set_rng_state(generator_state)


@pytest.fixture(scope="session")
def mlp_factory(digits: DataSplit) -> Callable[[int], nn.Module]:
    """Build a seeded digits MLP of a given hidden width."""

    def make(width: int) -> nn.Module:
        return build_mlp(digits.n_features, digits.n_classes, width)

    return make


@pytest.fixture(scope="session")
def tracker_config() -> topselect.TrackerConfig:
    """Tracker settings with a small landscape grid, so each probe takes milliseconds."""
    return topselect.TrackerConfig(grid_size=GRID_SIZE, seed=SEED)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Return the fraction of ``x`` that ``model`` classifies as ``y``."""
    model.eval()
    with torch.no_grad():
        correct = (model(x).argmax(dim=1) == y).float().mean()
    model.train()
    return float(correct)


@pytest.fixture(scope="session")
def make_objective(
    digits: DataSplit,
    probe: topselect.ProbeSet,
    mlp_factory: Callable[[int], nn.Module],
    tracker_config: topselect.TrackerConfig,
) -> Callable[..., Callable[[optuna.Trial], float]]:
    """Return a factory of tracked objectives that log through a ``StudyLogger``.

    The objective trains a digits MLP for ``epochs`` epochs, reports validation accuracy
    through ``topselect.track`` after each epoch, and returns the final accuracy.
    """

    def make(
        logger: topselect.StudyLogger, epochs: int = EPOCHS
    ) -> Callable[[optuna.Trial], float]:
        def objective(trial: optuna.Trial) -> float:
            optimizer_name = trial.suggest_categorical("optimizer", ["adam", "sgd"])
            lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
            width = trial.suggest_categorical("width", [32, 64])
            model = mlp_factory(width)
            optimizer_class = torch.optim.Adam if optimizer_name == "adam" else torch.optim.SGD
            optimizer = optimizer_class(model.parameters(), lr=lr)
            order = torch.Generator().manual_seed(SEED * 1000 + trial.number)
            with topselect.track(
                trial, model, probe=probe, logger=logger, config=tracker_config
            ) as tracker:
                for epoch in range(epochs):
                    permutation = torch.randperm(len(digits.x_train), generator=order)
                    for index in permutation.split(BATCH_SIZE):
                        optimizer.zero_grad()
                        outputs = model(digits.x_train[index])
                        F.cross_entropy(outputs, digits.y_train[index]).backward()
                        optimizer.step()
                    value = accuracy(model, digits.x_val, digits.y_val)
                    tracker.report(value, step=epoch, progress=(epoch + 1) / epochs)
                return tracker.finish(value)

        return objective

    return make


# -- stores ----------------------------------------------------------------------------


@pytest.fixture
def optuna_storage(tmp_path: Path) -> str:
    """URL of a fresh sqlite Optuna storage."""
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """URI of a fresh sqlite MLflow tracking store, with ``tmp_path`` as working directory.

    StudyLogger keeps artifacts beside the store, but MLflow itself puts the artifacts of
    experiments it creates under ``./mlruns`` of the working directory, so the test runs
    in ``tmp_path`` to keep any such folder out of the repository.
    """
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def create_tracked_study(study_name: str, storage: str) -> optuna.Study:
    """Create a maximizing study with topselect's sampler and a threshold-based pruner."""
    sampler = topselect.TopologicalSampler(
        optuna.samplers.TPESampler(seed=SEED), weight=TRACKED_WEIGHT
    )
    pruner = topselect.TopologicalPruner(
        optuna.pruners.ThresholdPruner(
            lower=PRUNE_BELOW_ACCURACY, n_warmup_steps=PRUNE_WARMUP_STEPS
        )
    )
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
    )


@pytest.fixture(scope="session")
def run_tracked_study(
    make_objective: Callable[..., Callable[[optuna.Trial], float]],
) -> Callable[..., optuna.Study]:
    """Return a function that runs a short tracked study and returns it.

    The first ``len(ENQUEUED_PARAMS)`` trials use fixed params, so at least one trial
    completes fitted and one is pruned. Later trials are sampled by TPE.
    """

    def run(
        study_name: str, storage: str, tracking_uri: str, n_trials: int, epochs: int = EPOCHS
    ) -> optuna.Study:
        study = create_tracked_study(study_name, storage)
        for params in ENQUEUED_PARAMS[:n_trials]:
            study.enqueue_trial(params)
        logger = topselect.StudyLogger(tracking_uri)
        logger.prepare_study(
            study, settings={"weight": study.sampler.weight, "score": study.sampler.score}
        )
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(SEED)
        try:
            study.optimize(make_objective(logger, epochs), n_trials=n_trials)
        finally:
            torch.random.set_rng_state(generator_state)
        return study

    return run


@dataclass(frozen=True)
class TrackedStudy:
    """The shared study: where it is stored and what its enqueued trials were set up to do.

    Attributes:
        study_name: Optuna study name, also the MLflow experiment name.
        storage: Optuna sqlite storage URL.
        tracking_uri: MLflow sqlite tracking URI.
        n_trials: Trials run.
        fitted_params: Params of a trial that completes fitted and founds a class.
        pruned_params: Params of a trial that ThresholdPruner prunes at ``prune_step``.
        unfitted_params: Params of a trial that completes without fitting.
        enqueued_params: Params of the first trials, in order.
        prune_step: Step at which ThresholdPruner first applies.
    """

    study_name: str
    storage: str
    tracking_uri: str
    n_trials: int = SHARED_STUDY_TRIALS
    fitted_params: dict = field(default_factory=lambda: dict(FITTED_PARAMS))
    pruned_params: dict = field(default_factory=lambda: dict(PRUNED_PARAMS))
    unfitted_params: dict = field(default_factory=lambda: dict(UNFITTED_PARAMS))
    enqueued_params: tuple = ENQUEUED_PARAMS
    prune_step: int = PRUNE_WARMUP_STEPS

    def load(self, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        """Load the study afresh from its sqlite storage.

        Without ``sampler``, the study gets a ``TopologicalSampler`` with the weight it ran
        with, so ``rank_trials`` on it ranks as the MLflow records do.
        """
        if sampler is None:
            sampler = topselect.TopologicalSampler(weight=TRACKED_WEIGHT)
        return optuna.load_study(study_name=self.study_name, storage=self.storage, sampler=sampler)


@pytest.fixture(scope="session")
def tracked_study(
    tmp_path_factory: pytest.TempPathFactory, run_tracked_study: Callable[..., optuna.Study]
) -> TrackedStudy:
    """One tracked study of ``SHARED_STUDY_TRIALS`` trials, shared read-only by many tests.

    Trials 0 and 2 complete fitted, trial 1 is pruned by the threshold rule, and trial 3
    completes unfitted. See ``ENQUEUED_PARAMS``.
    """
    directory = tmp_path_factory.mktemp("tracked-study")
    shared = TrackedStudy(
        study_name="digits-mlp",
        storage=f"sqlite:///{directory / 'optuna.db'}",
        tracking_uri=f"sqlite:///{directory / 'mlflow.db'}",
    )
    # The working directory decides where MLflow puts the artifacts (see tracking_uri).
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        run_tracked_study(
            shared.study_name, shared.storage, shared.tracking_uri, SHARED_STUDY_TRIALS
        )
    return shared


# -- mlflow server ---------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_START_TIMEOUT_S = 60.0


def wait_for_health(url: str, process: subprocess.Popen, log_path: Path) -> None:
    """Poll ``url`` until it returns HTTP 200, and fail if the process exits or time runs out."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"mlflow server exited with code {process.returncode} before answering "
                f"{url}; its log:\n{log_path.read_text(errors='replace')[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(
        f"mlflow server did not answer {url} within {SERVER_START_TIMEOUT_S:.0f} s; its log:\n"
        f"{log_path.read_text(errors='replace')[-4000:]}"
    )


def process_group_alive(group_id: int) -> bool:
    try:
        os.killpg(group_id, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a process started with ``start_new_session=True`` and every process it spawned.

    Sends SIGTERM to the process group (the group id is the leader's pid), waits up to
    ``timeout`` seconds for the group to empty, then sends SIGKILL.
    """
    group_id = process.pid
    if process_group_alive(group_id):
        os.killpg(group_id, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_group_alive(group_id) and time.monotonic() < deadline:
        process.poll()  # Reap the leader, so that its pid leaves the group.
        time.sleep(0.1)
    if process_group_alive(group_id):
        os.killpg(group_id, signal.SIGKILL)
    process.wait(timeout=timeout)


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``.

    Attributes:
        url: Tracking URI of the server, ``http://127.0.0.1:<port>``.
        backend_store_uri: The server's sqlite backend store.
        artifacts_directory: Where the server writes the artifacts that it proxies.
    """

    url: str
    backend_store_uri: str
    artifacts_directory: Path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` on 127.0.0.1 with artifact serving, for one test module.

    The server runs one worker against a sqlite backend store and an artifacts directory
    in a fresh temporary directory, and is stopped at teardown. While it runs, MLflow's
    HTTP client fails within seconds when the server is unreachable, instead of retrying
    for minutes.
    """
    directory = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    server = MlflowServer(
        url=f"http://127.0.0.1:{port}",
        backend_store_uri=f"sqlite:///{directory / 'mlflow.db'}",
        artifacts_directory=directory / "artifacts",
    )
    log_path = directory / "server.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        server.backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(server.artifacts_directory),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        patch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        patch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        # MLflow 3.17 also starts a job runner with seven huey worker processes unless
        # this is off. The tests need none of them, and they take seconds of CPU to start.
        environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=directory,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_health(f"{server.url}/health", process, log_path)
            yield server
        finally:
            stop_process_group(process)
