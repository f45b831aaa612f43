"""The workloads shared by the benchmarks: data, search space, model and training loop.

Every trained model is a ReLU MLP (``topselect.demo.build_model``) on flat inputs:
scikit-learn's digits (64 features) or MNIST-1D (length-40 signals, 4,000 examples
generated locally). The search space has seven hyperparameters: learning rate, batch
size, weight decay, width, depth, optimizer (Adam, or SGD with momentum 0.9) and epochs.
Each trial trains inside ``topselect.track`` so that the benchmarks read the same scores
that a user's study stores.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    import torch

    from topselect.datasets import DataSplit
    from topselect.homotopy import WaypointStore
    from topselect.landscape import ProbeSet
    from topselect.search import TrackerConfig

__all__ = [
    "DATASETS",
    "EPOCH_CHOICES",
    "Workload",
    "load_workload",
    "suggest_params",
    "train_trial",
]

#: Data sets every benchmark runs on.
DATASETS = ("digits", "mnist1d")

LR_RANGE = (1e-4, 0.3)
WEIGHT_DECAY_RANGE = (1e-6, 1e-2)
BATCH_SIZES = (16, 32, 64, 128)
WIDTHS = (32, 64, 128)
DEPTHS = (1, 3)
OPTIMIZERS = ("adam", "sgd")
#: Training epochs the search chooses from (full size).
EPOCH_CHOICES = (5, 10, 20)

_logger = logging.getLogger(__name__)

#: Training examples in every probe set.
PROBE_SIZE = 512


@dataclass(frozen=True)
class Workload:
    """One data set, flattened to ``(n, features)``, with its probe set."""

    dataset: str
    data: DataSplit
    probe: ProbeSet


@functools.cache
def load_workload(dataset: str, seed: int, mnist1d_samples: int = 4000) -> Workload:
    """Load ``dataset`` ("digits" or "mnist1d") split by ``seed``, with a probe set.

    Results are cached per process, because generating MNIST-1D takes seconds.

    Raises:
        ValueError: For an unknown data set name.
    """
    import topselect
    from topselect.datasets import DataSplit, load_digits_split, load_mnist1d_split

    if dataset == "digits":
        data = load_digits_split(seed=seed)
    elif dataset == "mnist1d":
        split = load_mnist1d_split(seed=seed, n_samples=mnist1d_samples)
        flat = [t.reshape(len(t), -1) for t in (split.x_train, split.x_val, split.x_test)]
        data = DataSplit(
            flat[0], split.y_train, flat[1], split.y_val, flat[2], split.y_test, split.n_classes
        )
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, but got {dataset!r}.")
    probe = topselect.make_probe_set(data.x_train, data.y_train, size=PROBE_SIZE, seed=seed)
    return Workload(dataset, data, probe)


def suggest_params(
    trial: optuna.Trial, epoch_choices: Sequence[int] | None = EPOCH_CHOICES
) -> dict[str, Any]:
    """Suggest the seven hyperparameters; ``epoch_choices=None`` leaves epochs out."""
    params: dict[str, Any] = {
        "lr": trial.suggest_float("lr", *LR_RANGE, log=True),
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "weight_decay": trial.suggest_float("weight_decay", *WEIGHT_DECAY_RANGE, log=True),
        "width": trial.suggest_categorical("width", WIDTHS),
        "depth": trial.suggest_int("depth", *DEPTHS),
        "optimizer": trial.suggest_categorical("optimizer", OPTIMIZERS),
    }
    if epoch_choices is not None:
        params["epochs"] = trial.suggest_categorical("epochs", tuple(epoch_choices))
    return params


def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Return (accuracy in points, mean cross-entropy) of ``model`` on ``(x, y)``."""
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(F.cross_entropy(logits, y))
        accuracy = 100.0 * float((logits.argmax(dim=1) == y).float().mean())
    model.train()
    return accuracy, loss


def _weight_norm(model: torch.nn.Module) -> float:
    return math.sqrt(sum(float((p.detach() ** 2).sum()) for p in model.parameters()))


def train_trial(
    trial: optuna.Trial,
    workload: Workload,
    params: dict[str, Any],
    *,
    epochs: int,
    seed: int,
    config: TrackerConfig,
    waypoint_store: WaypointStore | None = None,
) -> float:
    """Train one MLP inside ``topselect.track`` and return its validation accuracy.

    The objective is the accuracy as a fraction in [0, 1], as in the demo, so that the
    sampler's weight means what its documentation says (0.01 is one accuracy point).
    Intermediate values are fractions too. The user attributes below are in points.

    Weights start from ``seed`` alone, so trials with the same architecture share their
    initialization. The data order depends on ``seed`` and the trial number. After
    training, the trial's user attributes get ``test_accuracy``, ``train_accuracy``,
    ``train_loss_full`` (training-set cross-entropy), ``val_loss`` and ``weight_norm``
    (L2 norm of all parameters). A pruned trial stops at its last reported epoch and gets
    none of them.

    Raises:
        optuna.TrialPruned: When the study's pruner prunes the trial.
    """
    import torch
    import torch.nn.functional as F

    import topselect
    from topselect.demo import build_model

    data = workload.data
    model = build_model(data.n_features, data.n_classes, params["width"], params["depth"], seed)
    optimizer: torch.optim.Optimizer
    if params["optimizer"] == "adam":
        optimizer = torch.optim.Adam(
            model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"]
        )
    else:
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=params["lr"],
            weight_decay=params["weight_decay"],
            momentum=0.9,
        )
    order = torch.Generator().manual_seed(seed * 100_003 + trial.number)
    n = len(data.x_train)
    with topselect.track(
        trial,
        model,
        probe=workload.probe,
        config=config,
        logger=False,
        waypoint_store=waypoint_store,
    ) as tracker:
        for epoch in range(epochs):
            model.train()
            for index in torch.randperm(n, generator=order).split(params["batch_size"]):
                optimizer.zero_grad()
                loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
                loss.backward()
                optimizer.step()
            val_accuracy, val_loss = _evaluate(model, data.x_val, data.y_val)
            tracker.report(val_accuracy / 100, step=epoch, progress=(epoch + 1) / epochs)
        test_accuracy, _ = _evaluate(model, data.x_test, data.y_test)
        train_accuracy, train_loss = _evaluate(model, data.x_train, data.y_train)
        for key, value in {
            "test_accuracy": test_accuracy,
            "train_accuracy": train_accuracy,
            "train_loss_full": train_loss,
            "val_loss": val_loss,
            "weight_norm": _weight_norm(model),
        }.items():
            trial.set_user_attr(key, value if math.isfinite(value) else None)
        _logger.info(
            "%s trial %d: val %.2f, test %.2f after %d epochs",
            workload.dataset,
            trial.number,
            val_accuracy,
            test_accuracy,
            epochs,
        )
        return tracker.finish(val_accuracy / 100)
