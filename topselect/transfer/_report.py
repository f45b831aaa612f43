"""A transfer comparison: pullback transfer against its baselines, timed in one run."""

from __future__ import annotations

import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from topselect.transfer._baselines import BaselineResult, check_baselines, run_baseline
from topselect.transfer._config import TransferConfig
from topselect.transfer._data import check_target_data
from topselect.transfer._features import model_device
from topselect.transfer._layers import check_layers, default_layers, find_head
from topselect.transfer._pullback import PullbackResult, run_pullback
from topselect.transfer._source import check_source_inputs, check_source_model

if TYPE_CHECKING:
    from torch import nn

    from topselect.datasets import DataSplit

__all__ = ["TRANSFER_SCHEMA_VERSION", "TransferReport", "evaluate_transfer"]

_logger = logging.getLogger(__name__)

#: Version of the ``topselect/transfer.json`` document.
TRANSFER_SCHEMA_VERSION = 1


@dataclass
class TransferReport:
    """Pullback transfer and its baselines on one target task, timed in the same run.

    Attributes:
        pullback: Every layer's heads and the chosen one.
        baselines: Baseline results by name, in the order run.
        config: The settings used.
        head: Name of the source model's output layer, replaced by the baselines.
        sizes: Examples in the target ``train``, ``val`` and ``test`` sets.
        n_classes: Number of target classes.
        device: Device the source model and the cached features were on.
        source: Where the source model came from (for example ``{"run_id": ...}``).
        created: UTC time of the comparison, ISO 8601.
    """

    pullback: PullbackResult
    baselines: dict[str, BaselineResult]
    config: TransferConfig
    head: str
    sizes: dict[str, int]
    n_classes: int
    device: str
    source: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def accuracy_ratio(self) -> float | None:
        """Pullback test accuracy divided by fine-tuning's; ``None`` without fine-tuning
        or when fine-tuning scored 0."""
        finetune = self.baselines.get("finetune")
        if finetune is None or finetune.test_accuracy == 0:
            return None
        return self.pullback.test_accuracy / finetune.test_accuracy

    @property
    def time_ratio(self) -> float | None:
        """Pullback wall time divided by fine-tuning's; ``None`` without fine-tuning."""
        finetune = self.baselines.get("finetune")
        if finetune is None or finetune.seconds <= 0:
            return None
        return self.pullback.seconds / finetune.seconds

    @property
    def time_saving(self) -> float | None:
        """``1 - time_ratio``: the share of fine-tuning's wall time that pullback saves."""
        ratio = self.time_ratio
        return None if ratio is None else 1.0 - ratio

    def metrics(self) -> dict[str, float]:
        """Return the headline numbers as flat metrics (accuracies as fractions, seconds).

        Keys: ``accuracy``, ``val_accuracy``, ``seconds``, ``feature_seconds``,
        ``<baseline>_accuracy`` and ``<baseline>_seconds`` for each baseline, and
        ``accuracy_ratio``, ``time_ratio`` and ``time_saving`` when fine-tuning ran.
        """
        chosen = self.pullback.chosen
        values: dict[str, float | None] = {
            "accuracy": chosen.test_accuracy,
            "val_accuracy": chosen.val_accuracy,
            "seconds": self.pullback.seconds,
            "feature_seconds": self.pullback.feature_seconds,
            "accuracy_ratio": self.accuracy_ratio,
            "time_ratio": self.time_ratio,
            "time_saving": self.time_saving,
        }
        for name, baseline in self.baselines.items():
            values[f"{name}_accuracy"] = baseline.test_accuracy
            values[f"{name}_seconds"] = baseline.seconds
        return {key: float(value) for key, value in values.items() if value is not None}

    def to_json(self) -> dict[str, Any]:
        """Return the ``topselect/transfer.json`` document (schema
        :data:`TRANSFER_SCHEMA_VERSION`); accuracies are fractions, times seconds."""
        chosen = self.pullback.chosen
        return {
            "schema_version": TRANSFER_SCHEMA_VERSION,
            "created": self.created,
            "source": dict(self.source),
            "device": self.device,
            "head": self.head,
            "n_classes": self.n_classes,
            "sizes": dict(self.sizes),
            "layers": [result.to_dict() for result in self.pullback.results],
            "layers_skipped": list(self.pullback.layers_skipped),
            "chosen": {"layer": chosen.layer, "head": chosen.head},
            "pullback": {
                "test_accuracy": chosen.test_accuracy,
                "val_accuracy": chosen.val_accuracy,
                "seconds": self.pullback.seconds,
                "feature_seconds": self.pullback.feature_seconds,
            },
            "baselines": {
                name: {
                    "test_accuracy": b.test_accuracy,
                    "val_accuracy": b.val_accuracy,
                    "seconds": b.seconds,
                    "epochs": b.epochs,
                    "best_epoch": b.best_epoch,
                    "details": dict(b.details),
                }
                for name, b in self.baselines.items()
            },
            "ratios": {
                "accuracy_ratio": self.accuracy_ratio,
                "time_ratio": self.time_ratio,
                "time_saving": self.time_saving,
            },
            "settings": self.config.to_dict(),
            "versions": _versions(),
        }


def _versions() -> dict[str, str]:
    import torch

    from topselect import __version__

    return {
        "topselect": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def evaluate_transfer(
    source: nn.Module,
    data: DataSplit,
    layers: Sequence[str] | None = None,
    config: TransferConfig | None = None,
    *,
    baselines: Sequence[str] = ("finetune", "scratch"),
    head: str | None = None,
    source_info: dict[str, Any] | None = None,
) -> TransferReport:
    """Run pullback transfer and its baselines on one target task and compare them.

    Pullback runs first (see :func:`pullback_transfer`), then each baseline in the order
    given, all in this process on the source model's device, so their wall times are
    comparable. Every baseline trains a copy for ``config.epochs`` epochs (see
    :class:`TransferConfig`); the source model is never changed. Every argument is
    checked before anything trains.

    Args:
        source: The trained source model.
        data: Target data; labels in ``[0, data.n_classes)``.
        layers: Cut layers for pullback (default: see :func:`pullback_transfer`).
        config: Settings; defaults when ``None``.
        baselines: Any of ``"finetune"``, ``"scratch"``, ``"lp_ft"``. Accuracy and time
            ratios need ``"finetune"``.
        head: Name of the source's output ``nn.Linear``, which the baselines replace;
            default: the last leaf module with parameters.
        source_info: JSON-safe facts about the source model, stored in the report.

    Returns:
        The comparison; :meth:`TransferReport.to_json` is ``topselect/transfer.json``.

    Raises:
        InvalidInputError: For a ``source`` that is not an ``nn.Module``, a bad layer
            name (the message lists valid names), an unknown baseline, or an output
            layer that is not an ``nn.Linear``. Also for invalid target data, such as
            non-finite inputs or fewer than two training classes. Also for inputs that
            the source model does not accept: another dtype, a shape its forward pass
            fails on, or an output that is not ``(n, classes)``.
    """
    config = config or TransferConfig()
    check_source_model(source)
    check_target_data(data)
    head_name = find_head(source, head)
    cut_layers = check_layers(source, layers) if layers is not None else default_layers(source)
    names = check_baselines(baselines, source)
    check_source_inputs(source, data)

    pullback = run_pullback(source, data, cut_layers, config, explicit=layers is not None)
    results = {name: run_baseline(name, source, head_name, data, config) for name in names}
    report = TransferReport(
        pullback=pullback,
        baselines=results,
        config=config,
        head=head_name,
        sizes={"train": len(data.x_train), "val": len(data.x_val), "test": len(data.x_test)},
        n_classes=data.n_classes,
        device=str(model_device(source)),
        source=dict(source_info or {}),
    )
    if report.accuracy_ratio is not None:
        _logger.info(
            "Pullback reached %.1f%% of fine-tuning's test accuracy in %.1f%% of its time.",
            100 * report.accuracy_ratio,
            100 * (report.time_ratio or 0.0),
        )
    return report
