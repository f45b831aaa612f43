"""The demo search: small MLPs on digits with the sampler, pruner and tracker of topselect."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from topselect.exceptions import InvalidInputError

if TYPE_CHECKING:
    import optuna
    import torch

    from topselect.datasets import DataSplit
    from topselect.landscape import ProbeSet
    from topselect.search import RankedTrial, TrackerConfig
    from topselect.tracking import StudyLogger

__all__ = ["DemoResult", "DemoSettings", "run_demo"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    """Settings of the demo search.

    Attributes:
        trials: Number of Optuna trials.
        seed: Seed of the data split, the sampler, weight initialization and probe set.
        epochs: Training epochs per trial.
        study_name: Optuna study name, also the MLflow experiment name.
        storage: Optuna storage URL; ``None`` keeps the study in memory.
        tracking_uri: MLflow tracking URI; ``None`` uses ``$MLFLOW_TRACKING_URI`` or
            ``sqlite:///<cwd>/mlflow.db``.
        grid_size: Points per axis of each landscape slice.
        probe_size: Training examples in the probe set.
    """

    trials: int = 40
    seed: int = 0
    epochs: int = 20
    study_name: str = "topselect-demo"
    storage: str | None = None
    tracking_uri: str | None = None
    grid_size: int = 31
    probe_size: int = 512

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise InvalidInputError(f"trials must be >= 1, but got {self.trials}.")
        if self.epochs < 1:
            raise InvalidInputError(f"epochs must be >= 1, but got {self.epochs}.")


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced.

    Attributes:
        study: The finished Optuna study.
        ranking: ``rank_trials(study)``.
        tracking_uri: Where the runs were logged.
        seconds: Wall time of the search.
        new_trials: Trials this call ran (a resumed study contains more).
    """

    study: optuna.Study
    ranking: list[RankedTrial]
    tracking_uri: str
    seconds: float
    new_trials: int


def build_model(
    n_features: int, n_classes: int, width: int, depth: int, seed: int
) -> torch.nn.Module:
    """Return an MLP with ``depth`` hidden ReLU layers of ``width`` units.

    Initialization is seeded by ``seed`` alone, so trials with the same architecture start
    from the same parameters and their trajectories can be compared.
    """
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        size = n_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, n_classes))
        return nn.Sequential(*layers)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Return the fraction of ``x`` that ``model`` classifies as ``y`` (eval mode, no grad)."""
    import torch

    training = model.training
    model.eval()
    with torch.no_grad():
        correct = (model(x).argmax(dim=1) == y).float().mean()
    model.train(training)
    return float(correct)


def make_objective(
    data: DataSplit,
    probe: ProbeSet,
    settings: DemoSettings,
    logger: StudyLogger,
    config: TrackerConfig,
) -> Callable[[optuna.Trial], float]:
    """Return the demo objective: train one MLP and return its validation accuracy."""

    def objective(trial: optuna.Trial) -> float:
        import torch
        import torch.nn.functional as F

        import topselect

        width = trial.suggest_categorical("width", [32, 64, 128])
        depth = trial.suggest_int("depth", 1, 3)
        lr = trial.suggest_float("lr", 1e-4, 0.3, log=True)
        batch_size = trial.suggest_categorical("batch_size", [16, 32, 64, 128])
        weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        optimizer_name = trial.suggest_categorical("optimizer", ["adam", "sgd"])

        model = build_model(data.n_features, data.n_classes, width, depth, settings.seed)
        optimizer: torch.optim.Optimizer
        if optimizer_name == "adam":
            optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        else:
            optimizer = torch.optim.SGD(
                model.parameters(), lr=lr, weight_decay=weight_decay, momentum=0.9
            )
        order = torch.Generator().manual_seed(settings.seed * 100_003 + trial.number)
        n = len(data.x_train)

        with topselect.track(trial, model, probe=probe, logger=logger, config=config) as tracker:
            for epoch in range(settings.epochs):
                model.train()
                for index in torch.randperm(n, generator=order).split(batch_size):
                    optimizer.zero_grad()
                    loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
                    loss.backward()
                    optimizer.step()
                val_accuracy = accuracy(model, data.x_val, data.y_val)
                tracker.report(val_accuracy, step=epoch, progress=(epoch + 1) / settings.epochs)
            # The test set is only reported, never used for selection.
            test_accuracy = accuracy(model, data.x_test, data.y_test)
            trial.set_user_attr("test_accuracy", test_accuracy)
            logger.log_metrics(tracker.run_id, {"test_accuracy": test_accuracy})
            return tracker.finish(val_accuracy)

    return objective


def run_demo(
    settings: DemoSettings, on_trial_end: Callable[[optuna.Study, Any], None] | None = None
) -> DemoResult:
    """Run the demo search and return the study with its ranking.

    Args:
        settings: Search settings.
        on_trial_end: Optional Optuna callback, e.g. to advance a progress bar.

    Raises:
        TrackingError: When the MLflow store cannot be prepared.
    """
    import optuna
    import torch

    import topselect
    from topselect.datasets import load_digits_split
    from topselect.search import TrackerConfig
    from topselect.tracking import StudyLogger

    data = load_digits_split(seed=settings.seed)
    probe = topselect.make_probe_set(
        data.x_train, data.y_train, size=settings.probe_size, seed=settings.seed
    )
    config = TrackerConfig(grid_size=settings.grid_size, seed=settings.seed)
    pruner = topselect.TopologicalPruner(
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
    )
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=settings.storage,
        direction="maximize",
        pruner=pruner,
        load_if_exists=True,
    )
    # A resumed study continues with a new, still reproducible seed, so that it does not
    # repeat the parameters its first run sampled.
    previous_trials = len(study.get_trials(deepcopy=False))
    sampler = topselect.TopologicalSampler(seed=settings.seed + previous_trials)
    study.sampler = sampler
    logger = StudyLogger(settings.tracking_uri)
    logger.prepare_study(
        study,
        settings={
            "dataset": "sklearn-digits",
            "epochs": settings.epochs,
            **config.to_params(),
        },
    )
    objective = make_objective(data, probe, settings, logger, config)
    callbacks = [on_trial_end] if on_trial_end is not None else []
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        study.optimize(objective, n_trials=settings.trials, callbacks=callbacks)
    seconds = time.perf_counter() - started
    logger.finish_study(study)
    new_trials = len(study.get_trials(deepcopy=False)) - previous_trials
    return DemoResult(
        study, topselect.rank_trials(study), logger.tracking_uri, seconds, new_trials
    )
