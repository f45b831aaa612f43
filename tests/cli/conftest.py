"""Fixtures of the CLI tests: small studies written through StudyLogger without training.

A synthetic study has real topselect artifacts (diagrams of sublevel persistence on
seeded grids, probe outputs of seeded untrained MLPs) logged through ``StudyLogger`` to a
fresh sqlite store, so a test may corrupt its files without touching the shared study.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from torch import nn

import topselect
from topselect.topology import sublevel_persistence
from topselect.tracking import encode_probe_outputs, record_probe_outputs

SYNTHETIC_STUDY = "synthetic"
# (optimizer, class, state) of each trial; the last one is pruned and has no diagram.
SYNTHETIC_TRIALS = (
    ("adam", "c0", "COMPLETE"),
    ("adam", "c0", "COMPLETE"),
    ("sgd", "c1", "COMPLETE"),
    ("sgd", "c1", "COMPLETE"),
    ("sgd", None, "PRUNED"),
)
GRID = 9


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store, migrated once; copying it skips MLflow's migrations."""
    path = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@dataclass(frozen=True)
class SyntheticStudy:
    """A synthetic study in its own sqlite store.

    Attributes:
        tracking_uri: The MLflow store.
        directory: Folder of the store, its artifacts and the Optuna storage.
        run_ids: Run id of each trial, by trial number.
        parent_run_id: The study run.
    """

    tracking_uri: str
    directory: Path
    run_ids: dict[int, str]
    parent_run_id: str

    def artifact(self, trial: int, name: str) -> Path:
        """Return the local file of a trial's ``topselect/<name>`` artifact."""
        run = MlflowClient(self.tracking_uri).get_run(self.run_ids[trial])
        return Path(unquote(urlparse(run.info.artifact_uri).path)) / "topselect" / name


def _diagram_json(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    grid = np.cumsum(np.cumsum(rng.normal(size=(GRID, GRID)), axis=0), axis=1)
    diagrams = sublevel_persistence(grid)

    def pairs(bars: np.ndarray) -> list:
        return [[float(b), float(d) if np.isfinite(d) else None] for b, d in bars]

    return {
        "schema_version": 1,
        "infinite_death": "null",
        "h0": pairs(diagrams.h0),
        "h1": pairs(diagrams.h1),
    }


def _probe_outputs(seed: int, probe: topselect.ProbeSet) -> bytes:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    return encode_probe_outputs(record_probe_outputs(model, probe))


def build_synthetic_study(directory: Path, migrated_store: Path) -> SyntheticStudy:
    """Log ``SYNTHETIC_TRIALS`` through StudyLogger into ``directory/mlflow.db``."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_store, directory / "mlflow.db")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    study = optuna.create_study(
        study_name=SYNTHETIC_STUDY,
        storage=f"sqlite:///{directory / 'optuna.db'}",
        direction="maximize",
    )
    logger = topselect.StudyLogger(uri, spool_dir=directory / "spool")
    parent = logger.prepare_study(study)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 8, generator=generator)
    probe = topselect.make_probe_set(inputs, torch.zeros(64, dtype=torch.long), size=32, seed=0)
    distributions = {
        "optimizer": CategoricalDistribution(["adam", "sgd"]),
        "lr": FloatDistribution(1e-3, 1e-1, log=True),
    }
    run_ids = {}
    for number, (optimizer, class_id, state) in enumerate(SYNTHETIC_TRIALS):
        trial = study.ask(distributions)
        run_id = logger.start_trial(study, trial)
        assert run_id is not None
        run_ids[number] = run_id
        value = 0.5 + 0.1 * number
        logger.log_params(run_id, {"optimizer": optimizer, "lr": trial.params["lr"]})
        logger.set_tags(run_id, {"topselect.state": state, "topselect.fitted": True})
        logger.log_metrics(run_id, {"intermediate_value": value}, step=1)
        if state == "COMPLETE":
            logger.set_tags(run_id, {"topselect.class_id": class_id})
            logger.log_metrics(run_id, {"value": value, "topselect.basin_area_0.1": 0.2})
            logger.log_artifacts(
                run_id,
                json_files={"diagram.json": _diagram_json(number)},
                files={"probe_outputs.npz": _probe_outputs(number // 2, probe)},
            )
            logger.end_run(run_id, "FINISHED")
            study.tell(trial, value)
        else:
            logger.end_run(run_id, "KILLED")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    logger.finish_study(study)
    return SyntheticStudy(uri, directory, run_ids, parent)


@pytest.fixture
def synthetic_study(tmp_path: Path, migrated_store: Path) -> SyntheticStudy:
    """A fresh synthetic study that the test may change."""
    return build_synthetic_study(tmp_path / "synthetic", migrated_store)


@pytest.fixture(scope="module")
def shared_synthetic_study(
    tmp_path_factory: pytest.TempPathFactory, migrated_store: Path
) -> SyntheticStudy:
    """A synthetic study shared read-only by the tests of one module."""
    return build_synthetic_study(tmp_path_factory.mktemp("synthetic"), migrated_store)
