"""The trial tracker on the paths a real objective takes besides the happy one."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient
from torch import nn

import topselect

CONFIG = topselect.TrackerConfig(grid_size=5, baselines=False)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    return x, (x[:, 0] > 0).long()


def _probe() -> topselect.ProbeSet:
    x, y = _data()
    return topselect.make_probe_set(x, y, size=64)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _train(model: nn.Module, lr: float, steps: int, tracker) -> float:
    x, y = _data()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss = float("nan")
    for step in range(steps):
        optimizer.zero_grad()
        output = F.cross_entropy(model(x), y)
        output.backward()
        optimizer.step()
        loss = float(output.detach())
        tracker.report(loss, step=step, progress=(step + 1) / steps)
    return loss


def _run(tracking_uri: str, objective, directions=("minimize",)) -> optuna.Study:
    storage = f"sqlite:///{Path(tracking_uri.removeprefix('sqlite:///')).parent / 'o.db'}"
    study = optuna.create_study(study_name="edges", storage=storage, directions=directions)
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    return study


def _trial_run(tracking_uri: str, study: optuna.Study):
    run_id = study.trials[0].user_attrs["topselect.mlflow_run_id"]
    return MlflowClient(tracking_uri).get_run(run_id)


def test_tracker_nan_value_fails_in_both(tracking_uri: str) -> None:
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("lr", 0.1, 0.2)
        model = _model()
        logger = topselect.StudyLogger(tracking_uri)
        with topselect.track(trial, model, probe=_probe(), logger=logger, config=CONFIG) as t:
            _train(model, trial.params["lr"], 4, t)
            return t.finish(float("nan"))  # What a diverged validation loss looks like.

    study = _run(tracking_uri, objective)
    run = _trial_run(tracking_uri, study)

    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert run.info.status == "FAILED"
    assert run.data.tags["topselect.state"] == "FAIL"
    assert "NaN" in run.data.tags["topselect.error"]
    assert "value" not in run.data.metrics
    assert run.data.params["lr"]


def test_tracker_without_finish_logs_no_value(
    tracking_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    def objective(trial: optuna.Trial) -> float:
        model = _model()
        logger = topselect.StudyLogger(tracking_uri)
        with topselect.track(trial, model, probe=_probe(), logger=logger, config=CONFIG) as t:
            _train(model, 0.1, 4, t)
        return 0.123

    with caplog.at_level(logging.WARNING, logger="topselect"):
        study = _run(tracking_uri, objective)
    run = _trial_run(tracking_uri, study)

    assert study.trials[0].value == 0.123
    assert "value" not in run.data.metrics
    assert any("tracker.finish(value)" in r.getMessage() for r in caplog.records)


def test_tracker_failed_trial_keeps_params_and_trajectory(tracking_uri: str) -> None:
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_int("width", 8, 8)
        model = _model()
        logger = topselect.StudyLogger(tracking_uri)
        with topselect.track(trial, model, probe=_probe(), logger=logger, config=CONFIG) as t:
            _train(model, 0.1, 4, t)
            raise RuntimeError("data loader crashed")

    study = _run(tracking_uri, objective)
    run = _trial_run(tracking_uri, study)
    artifacts = {
        a.path for a in MlflowClient(tracking_uri).list_artifacts(run.info.run_id, "topselect")
    }

    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert run.info.status == "FAILED"
    assert run.data.params["width"] == "8"
    assert run.data.tags["topselect.error"] == "RuntimeError: data loader crashed"
    assert "topselect/trajectory.json" in artifacts


def test_tracker_multi_objective_logs_every_value(tracking_uri: str) -> None:
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        model = _model()
        logger = topselect.StudyLogger(tracking_uri)
        with topselect.track(trial, model, probe=_probe(), logger=logger, config=CONFIG) as t:
            loss = _train(model, 0.1, 4, t)
            return t.finish((loss, 2 * loss))

    study = _run(tracking_uri, objective, directions=("minimize", "minimize"))
    run = _trial_run(tracking_uri, study)

    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert run.data.metrics["value_0"] == pytest.approx(study.trials[0].values[0])
    assert run.data.metrics["value_1"] == pytest.approx(study.trials[0].values[1])
    assert (
        len(MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "intermediate_value"))
        == 4
    )


def test_tracker_finish_wrong_count_rejected(tracking_uri: str) -> None:
    def objective(trial: optuna.Trial) -> float:
        model = _model()
        with topselect.track(trial, model, probe=_probe(), logger=False, config=CONFIG) as t:
            return t.finish((1.0, 2.0))

    study = optuna.create_study()
    with pytest.raises(
        topselect.InvalidInputError, match=r"1 objective\(s\), but finish\(\) got 2"
    ):
        study.optimize(objective, n_trials=1)


def test_tracker_finish_outside_with_rejected() -> None:
    study = optuna.create_study()
    trial = study.ask()
    tracker = topselect.track(trial, _model(), probe=_probe(), logger=False, config=CONFIG)

    with pytest.raises(topselect.InvalidInputError, match="tracker is not open"):
        tracker.finish(1.0)


def test_tracker_diverged_run_keeps_trajectory() -> None:
    study = optuna.create_study()

    def objective(trial: optuna.Trial) -> float:
        model = _model()
        with topselect.track(trial, model, probe=_probe(), logger=False, config=CONFIG) as t:
            _train(model, 1e6, 8, t)
            summary_holder.append(t)
            return t.finish(1.0)

    summary_holder: list = []
    study.optimize(objective, n_trials=1)
    tracker = summary_holder[0]

    assert tracker.summary is not None
    assert tracker.summary.explained_variance == []
    assert "probe the landscape" in study.trials[0].user_attrs["topselect.analysis_error"]


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"grid_size": 30}, "grid_size must be odd"),
        ({"radius": 0}, "radius must be a finite number > 0"),
        ({"strategy": "gpu"}, "strategy must be"),
        ({"basin_levels": (-0.1,)}, "basin_levels must be"),
        ({"fractions": (0.5, 0.25)}, "fractions must be strictly ascending"),
    ],
)
def test_tracker_config_rejects_bad_settings(options: dict, pattern: str) -> None:
    with pytest.raises(topselect.InvalidInputError, match=pattern):
        topselect.TrackerConfig(**options)


@pytest.mark.parametrize(
    ("name", "value", "pattern"),
    [
        ("max_candidates", 2.5, r"max_candidates must be an integer >= 1, but got 2\.5\."),
        ("max_candidates", math.nan, "max_candidates must be an integer >= 1, but got nan"),
        ("max_candidates", True, "max_candidates must be an integer >= 1, but got True"),
        ("max_candidates", "3", "max_candidates must be an integer >= 1, but got '3'"),
        ("max_candidates", None, "max_candidates must be an integer >= 1, but got None"),
        ("max_candidates", 0, "max_candidates must be an integer >= 1, but got 0"),
        ("prefix_candidates", 2.5, "prefix_candidates must be an integer >= 1"),
        ("prefix_candidates", False, "prefix_candidates must be an integer >= 1"),
        ("prefix_candidates", "3", "prefix_candidates must be an integer >= 1"),
        ("prefix_candidates", 0, "prefix_candidates must be an integer >= 1"),
        ("sketch_dim", 32.0, "sketch_dim must be an integer >= 1, but got 32.0"),
        ("sketch_dim", None, "sketch_dim must be an integer >= 1"),
        ("grid_size", 31.0, "grid_size must be an odd integer >= 3, but got 31.0"),
        ("grid_size", "31", "grid_size must be an odd integer >= 3"),
        ("grid_size", 1, "grid_size must be an odd integer >= 3, but got 1"),
        ("seed", 1.5, r"seed must be an integer in \[0, 4294967295\], but got 1\.5"),
        ("seed", True, r"seed must be an integer in \[0, 4294967295\]"),
        ("seed", -1, r"seed must be an integer in \[0, 4294967295\], but got -1"),
        ("seed", 2**32, r"seed must be an integer in \[0, 4294967295\]"),
    ],
)
def test_tracker_config_rejects_bad_integers(name: str, value: object, pattern: str) -> None:
    with pytest.raises(topselect.InvalidInputError, match=pattern):
        topselect.TrackerConfig(**{name: value})


def test_tracker_config_accepts_integer_bounds() -> None:
    config = topselect.TrackerConfig(
        grid_size=3, seed=2**32 - 1, sketch_dim=1, max_candidates=1, prefix_candidates=1
    )
    assert config.grid_size == 3
    assert config.seed == 2**32 - 1
    assert config.max_candidates == 1
    assert config.prefix_candidates == 1


def test_tracker_config_numpy_integers_stored_as_int() -> None:
    config = topselect.TrackerConfig(seed=np.int64(7), max_candidates=np.int32(4))

    assert config.seed == 7
    assert type(config.seed) is int
    assert type(config.max_candidates) is int
    assert json.loads(json.dumps(config.to_params()))["seed"] == 7


class _ItemModel(nn.Module):
    """A model that reads a tensor value in Python, which torch.vmap cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 if float(self.linear.weight.sum().item()) > -1e9 else 0.0
        return self.linear(x) * scale


def test_probe_auto_falls_back_to_loop() -> None:
    torch.manual_seed(0)
    result = topselect.probe_landscape(_ItemModel(), F.cross_entropy, _probe(), grid_size=3)

    assert result.strategy == "loop"
    assert math.isfinite(result.scores["center_loss"])


def test_probe_vmap_on_untraceable_model_raises() -> None:
    torch.manual_seed(0)
    with pytest.raises(RuntimeError):
        topselect.probe_landscape(
            _ItemModel(), F.cross_entropy, _probe(), grid_size=3, strategy="vmap"
        )
