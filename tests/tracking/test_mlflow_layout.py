"""The MLflow layout of a tracked study, read back from its sqlite tracking store.

The shared study of ``tests/conftest.py`` logs through ``StudyLogger``: one experiment
named after the study, one parent run, one nested run per trial with its params, metrics,
tags and artifacts under ``topselect/``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

import topselect

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMPLETED_ARTIFACTS = {
    "topselect/diagram.json",
    "topselect/diagram.png",
    "topselect/landscape.png",
    "topselect/trajectory.json",
}


@pytest.fixture(scope="module")
def study(tracked_study) -> optuna.Study:
    return tracked_study.load()


@pytest.fixture(scope="module")
def client(tracked_study) -> MlflowClient:
    return MlflowClient(tracking_uri=tracked_study.tracking_uri)


@pytest.fixture(scope="module")
def experiment_id(client: MlflowClient, tracked_study) -> str:
    experiment = client.get_experiment_by_name(tracked_study.study_name)
    assert experiment is not None
    return experiment.experiment_id


@pytest.fixture(scope="module")
def parent_run(client: MlflowClient, experiment_id: str) -> mlflow.entities.Run:
    parents = client.search_runs([experiment_id], "tags.`topselect.role` = 'study'")
    assert len(parents) == 1
    return parents[0]


@pytest.fixture(scope="module")
def trial_runs(
    client: MlflowClient, experiment_id: str, parent_run: mlflow.entities.Run
) -> dict[str, mlflow.entities.Run]:
    """Nested runs of the parent run, by run name."""
    children = client.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run.info.run_id}'"
    )
    return {run.info.run_name: run for run in children}


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE,))


def download_artifact(run_id: str, path: str, tracking_uri: str, directory: Path) -> Path:
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=path, dst_path=str(directory), tracking_uri=tracking_uri
    )
    return Path(local)


def reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def numbers_in(value: Any) -> list[float]:
    """Return every int and float in a parsed JSON document (bools excluded)."""
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers_in(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers_in(item)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [value]
    return []


# -- experiment and runs ------------------------------------------------------------------


def test_layout_one_experiment_per_study(client: MlflowClient, tracked_study) -> None:
    names = [experiment.name for experiment in client.search_experiments()]

    assert names.count(tracked_study.study_name) == 1
    assert set(names) == {"Default", tracked_study.study_name}


def test_layout_parent_run_tags(parent_run: mlflow.entities.Run, study: optuna.Study) -> None:
    tags = parent_run.data.tags

    assert parent_run.info.run_name == study.study_name
    assert tags["topselect.role"] == "study"
    assert tags["topselect.direction"] == "maximize"
    assert tags["topselect.schema_version"] == "1"
    assert study.user_attrs["topselect.mlflow_parent_run_id"] == parent_run.info.run_id


def test_layout_parent_run_settings(parent_run: mlflow.entities.Run) -> None:
    assert parent_run.data.params == {
        "topselect.weight": "0.01",
        "topselect.score": "basin_area_0.1",
    }


def test_layout_nested_run_per_trial(
    trial_runs: dict[str, mlflow.entities.Run],
    parent_run: mlflow.entities.Run,
    study: optuna.Study,
) -> None:
    assert sorted(trial_runs) == sorted(str(trial.number) for trial in study.trials)
    for trial in study.trials:
        run = trial_runs[str(trial.number)]
        assert run.data.tags["mlflow.parentRunId"] == parent_run.info.run_id
        assert run.data.tags["topselect.role"] == "trial"
        assert run.data.tags["topselect.trial_number"] == str(trial.number)
        assert trial.user_attrs["topselect.mlflow_run_id"] == run.info.run_id


def test_layout_params_equal_trial_params(
    trial_runs: dict[str, mlflow.entities.Run],
    study: optuna.Study,
    tracker_config: topselect.TrackerConfig,
) -> None:
    settings = {f"topselect.{k}": str(v) for k, v in tracker_config.to_params().items()}
    for trial in study.trials:
        params = trial_runs[str(trial.number)].data.params
        own = {k: v for k, v in params.items() if not k.startswith("topselect.")}
        assert own == {name: str(value) for name, value in trial.params.items()}
        assert {k: v for k, v in params.items() if k.startswith("topselect.")} == settings


@pytest.mark.parametrize(
    ("state", "status"), [(TrialState.COMPLETE, "FINISHED"), (TrialState.PRUNED, "KILLED")]
)
def test_layout_run_status_follows_state(
    trial_runs: dict[str, mlflow.entities.Run],
    study: optuna.Study,
    state: TrialState,
    status: str,
) -> None:
    trials = study.get_trials(states=(state,))

    assert trials
    for trial in trials:
        run = trial_runs[str(trial.number)]
        assert run.info.status == status
        assert run.data.tags["topselect.state"] == state.name
        assert run.data.tags["topselect.fitted"] == str(trial.user_attrs["topselect.fitted"])
        expected_reason = trial.user_attrs.get("topselect.prune_reason", "")
        assert run.data.tags["topselect.prune_reason"] == expected_reason


# -- metrics ------------------------------------------------------------------------------


def test_layout_intermediate_value_history(
    client: MlflowClient, trial_runs: dict[str, mlflow.entities.Run], study: optuna.Study
) -> None:
    for trial in study.trials:
        run_id = trial_runs[str(trial.number)].info.run_id
        history = client.get_metric_history(run_id, "intermediate_value")
        by_step = {metric.step: metric.value for metric in history}

        assert len(history) == len(trial.intermediate_values), f"trial {trial.number}"
        assert by_step == pytest.approx(trial.intermediate_values), f"trial {trial.number}"


def test_layout_completed_value_and_scores(
    trial_runs: dict[str, mlflow.entities.Run], study: optuna.Study
) -> None:
    for trial in completed(study):
        metrics = trial_runs[str(trial.number)].data.metrics
        scores = trial.user_attrs["topselect.scores"]

        assert metrics["value"] == pytest.approx(trial.value)
        assert metrics["topselect.train_loss"] == pytest.approx(
            trial.user_attrs["topselect.train_loss"]
        )
        for name, score in scores.items():
            if score is not None:
                assert metrics[f"topselect.{name}"] == pytest.approx(score), name


def test_layout_pruned_run_has_no_value(
    trial_runs: dict[str, mlflow.entities.Run], study: optuna.Study
) -> None:
    for trial in study.get_trials(states=(TrialState.PRUNED,)):
        assert "value" not in trial_runs[str(trial.number)].data.metrics


# -- artifacts ----------------------------------------------------------------------------


def test_layout_completed_trial_artifacts(
    client: MlflowClient, trial_runs: dict[str, mlflow.entities.Run], study: optuna.Study
) -> None:
    for trial in completed(study):
        listed = {
            info.path
            for info in client.list_artifacts(
                trial_runs[str(trial.number)].info.run_id, "topselect"
            )
        }
        assert COMPLETED_ARTIFACTS <= listed, f"trial {trial.number} has {sorted(listed)}"


def test_layout_diagram_json_is_finite(
    trial_runs: dict[str, mlflow.entities.Run],
    study: optuna.Study,
    tracked_study,
    tmp_path: Path,
) -> None:
    for trial in completed(study):
        run_id = trial_runs[str(trial.number)].info.run_id
        path = download_artifact(
            run_id, "topselect/diagram.json", tracked_study.tracking_uri, tmp_path / run_id
        )
        document = json.loads(path.read_text(encoding="utf-8"), parse_constant=reject_constant)

        assert document["schema_version"] == 1
        assert document["infinite_death"] == "null"
        assert all(math.isfinite(n) for n in numbers_in(document))
        h0_deaths = [death for _, death in document["h0"]]
        assert h0_deaths.count(None) == 1, "the essential H0 bar is the one null death"
        assert None not in [death for _, death in document["h1"]]
        assert all(birth is not None for birth, _ in document["h0"] + document["h1"])
        assert document["grid_size"] == 9


def test_layout_diagram_essential_bar_births_at_min(
    trial_runs: dict[str, mlflow.entities.Run],
    study: optuna.Study,
    tracked_study,
    tmp_path: Path,
) -> None:
    for trial in completed(study):
        run_id = trial_runs[str(trial.number)].info.run_id
        path = download_artifact(
            run_id, "topselect/diagram.json", tracked_study.tracking_uri, tmp_path / run_id
        )
        document = json.loads(path.read_text(encoding="utf-8"))
        essential = [birth for birth, death in document["h0"] if death is None]

        assert essential == [pytest.approx(document["value_range"][0])]


def test_layout_png_artifacts_are_png(
    trial_runs: dict[str, mlflow.entities.Run],
    study: optuna.Study,
    tracked_study,
    tmp_path: Path,
) -> None:
    for trial in completed(study):
        run_id = trial_runs[str(trial.number)].info.run_id
        for name in ("topselect/diagram.png", "topselect/landscape.png"):
            path = download_artifact(run_id, name, tracked_study.tracking_uri, tmp_path / run_id)
            assert path.read_bytes()[:8] == PNG_MAGIC, f"trial {trial.number} {name}"


def test_layout_trajectory_json_matches_trial(
    trial_runs: dict[str, mlflow.entities.Run],
    study: optuna.Study,
    tracked_study,
    tmp_path: Path,
) -> None:
    for trial in completed(study):
        run_id = trial_runs[str(trial.number)].info.run_id
        path = download_artifact(
            run_id, "topselect/trajectory.json", tracked_study.tracking_uri, tmp_path / run_id
        )
        document = json.loads(path.read_text(encoding="utf-8"), parse_constant=reject_constant)

        assert document["schema_version"] == 1
        assert document["class_id"] == trial.user_attrs["topselect.class_id"]
