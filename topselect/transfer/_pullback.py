"""Pullback transfer: a frozen source model cut at a layer, and a head fitted on its cache.

For each candidate cut layer the frozen model's features on the target data are computed
once (:mod:`topselect.transfer._features`). A linear head, and optionally an MLP head, is
fitted on them, and the layer and head with the best validation accuracy are chosen. The
source model's parameters and buffers are only read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from topselect.transfer._config import TransferConfig
from topselect.transfer._data import check_target_data
from topselect.transfer._features import (
    FeatureCache,
    LayerFeatures,
    cache_features,
    eval_mode,
    model_device,
    synchronize,
)
from topselect.transfer._heads import (
    FittedHead,
    HeadKind,
    accuracy_of,
    fit_logistic_head,
    fit_mlp_head,
    fit_ridge_head,
)
from topselect.transfer._layers import capture_outputs, check_layers, default_layers
from topselect.transfer._source import check_source_inputs, check_source_model

if TYPE_CHECKING:
    import torch
    from torch import nn

    from topselect.datasets import DataSplit

__all__ = [
    "LayerResult",
    "PullbackResult",
    "pullback_model",
    "pullback_transfer",
    "run_pullback",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerResult:
    """One head fitted at one cut layer.

    Attributes:
        layer: Module name of the cut.
        head: ``"linear"`` or ``"mlp"``.
        dim: Number of feature columns at the cut.
        val_accuracy: Validation accuracy, a fraction in [0, 1].
        test_accuracy: Test accuracy, a fraction in [0, 1] (reported, never used to choose).
        seconds: Wall time of fitting the head, in seconds.
        details: Solver facts (penalty, iterations, steps).
    """

    layer: str
    head: HeadKind
    dim: int
    val_accuracy: float
    test_accuracy: float
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-safe dictionary."""
        return {
            "layer": self.layer,
            "head": self.head,
            "dim": self.dim,
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
            "seconds": self.seconds,
            "details": dict(self.details),
        }


@dataclass
class PullbackResult:
    """Outcome of :func:`pullback_transfer`.

    Attributes:
        results: Every fitted head, in the order tried (layers in order, linear first).
        chosen: The head with the best validation accuracy; the first of equals.
        model: The frozen source model cut at ``chosen.layer`` with the chosen head, a
            module that maps inputs to target logits (see :func:`pullback_model`).
        feature_seconds: Wall time of caching the features of every layer, in seconds.
        seconds: Wall time of the whole pullback: features, every head and the choice.
        layers_skipped: Default layers left out because their features equalled the
            previous layer's (a flatten after a pooling layer, for example).
    """

    results: list[LayerResult]
    chosen: LayerResult
    model: nn.Module
    feature_seconds: float
    seconds: float
    layers_skipped: list[str] = field(default_factory=list)

    @property
    def test_accuracy(self) -> float:
        """Test accuracy of the chosen layer and head."""
        return self.chosen.test_accuracy


def pullback_model(source: nn.Module, layer: str, head: nn.Module) -> nn.Module:
    """Return a module that runs ``source`` up to ``layer`` (frozen) and then ``head``.

    The source part always runs in eval mode and without gradients, and the forward
    pass stops at ``layer``. Only ``head`` trains when the returned module does.

    Raises:
        InvalidInputError: When ``layer`` is not a module of ``source``.
    """
    from torch import nn

    check_layers(source, [layer])

    class PullbackModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = source
            self.head = head
            self.layer = layer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            import torch

            with eval_mode(self.encoder), torch.no_grad():
                features = capture_outputs(self.encoder, x, [self.layer])[self.layer]
            return self.head(features)

    return PullbackModel()


def _fit_heads(
    features: LayerFeatures, data: DataSplit, config: TransferConfig, device: torch.device
) -> list[tuple[FittedHead, LayerResult]]:
    import torch

    y_train, y_val, y_test = (y.to(device) for y in (data.y_train, data.y_val, data.y_test))
    args = (features.train, y_train, features.val, y_val, data.n_classes)
    heads: list[FittedHead] = []
    if config.linear_solver == "ridge":
        heads.append(fit_ridge_head(*args, config.ridge_penalties))
    else:
        heads.append(
            fit_logistic_head(*args, penalty=config.lbfgs_penalty, max_iter=config.lbfgs_max_iter)
        )
    if config.mlp_head:
        heads.append(
            fit_mlp_head(
                *args,
                hidden=config.mlp_hidden,
                steps=config.mlp_steps,
                lr=config.mlp_lr,
                eval_every=config.mlp_eval_every,
                keep_best=config.keep_best,
                seed=config.seed,
            )  # fmt: skip
        )
    fitted = []
    for head in heads:
        with torch.no_grad():
            test = accuracy_of(head.module(features.test), y_test)
        result = LayerResult(
            features.layer, head.kind, features.dim, head.val_accuracy, test, head.seconds,
            head.details,
        )  # fmt: skip
        fitted.append((head, result))
    return fitted


def _distinct_layers(cache: FeatureCache) -> tuple[list[str], list[str]]:
    """Split default layers into those with new features and those whose features equal
    the previous kept layer's."""
    import torch

    kept_layers: list[str] = []
    skipped: list[str] = []
    for name, features in cache.layers.items():
        previous = cache.layers[kept_layers[-1]].train if kept_layers else None
        if previous is not None and torch.equal(previous, features.train):
            skipped.append(name)
        else:
            kept_layers.append(name)
    return kept_layers, skipped


def pullback_transfer(
    source: nn.Module,
    data: DataSplit,
    layers: Sequence[str] | None = None,
    config: TransferConfig | None = None,
) -> PullbackResult:
    """Transfer a frozen source model to a target task by fitting heads at cut layers.

    The features of every cut layer on the target train, validation and test sets are
    computed in one chunked pass per set and cached on the model's device. At each layer
    a linear head (``config.linear_solver``), and an MLP head when ``config.mlp_head``,
    is fitted on the cached training features. The layer and head with the best
    validation accuracy are chosen (the first tried among equals). Test accuracy is
    reported for every head but never used to choose. Wall time covers the feature pass
    over all three sets and every head. The cache contains every layer's features at once:
    ``4 * (n_train + n_val + n_test) * dim`` bytes per float32 layer.

    Args:
        source: The trained source model. Its parameters, buffers, ``requires_grad``
            flags and train/eval modes are left as they were.
        data: Target data; labels in ``[0, data.n_classes)``.
        layers: Cut layer names from ``source.named_modules()``. Default: every leaf
            module without parameters before the output layer (see
            :func:`topselect.transfer.default_layers`), leaving out a layer whose
            features equal the previous one's.
        config: Head settings; :class:`TransferConfig` defaults when ``None``.

    Returns:
        Every layer's heads, the chosen one, and the frozen model with that head.

    Raises:
        InvalidInputError: For a ``source`` that is not an ``nn.Module``, or a layer
            name that is not a module of ``source`` (the message lists the valid
            names). Also for invalid target data, such as non-finite inputs or fewer
            than two training classes. Also for inputs that the source model does not
            accept: another dtype, a shape its forward pass fails on, or an output that
            is not ``(n, classes)``.

    Example:
        >>> from topselect.datasets import load_digits_split
        >>> from topselect.transfer import pullback_transfer, split_classes
        >>> source_task, target = split_classes(load_digits_split(), range(5), range(5, 10))
        >>> result = pullback_transfer(trained_model, target, layers=["1", "3"])
        >>> result.chosen.layer, result.test_accuracy  # doctest: +SKIP
    """
    config = config or TransferConfig()
    check_source_model(source)
    check_target_data(data)
    names = check_layers(source, layers) if layers is not None else default_layers(source)
    check_source_inputs(source, data)
    return run_pullback(source, data, names, config, explicit=layers is not None)


def run_pullback(
    source: nn.Module,
    data: DataSplit,
    names: list[str],
    config: TransferConfig,
    *,
    explicit: bool,
) -> PullbackResult:
    """Run :func:`pullback_transfer` on checked arguments.

    ``names`` are the cut layers. With ``explicit`` false they are the default layers,
    and a layer whose features equal the previous one's is skipped.
    """
    device = model_device(source)

    synchronize(device)
    start = time.perf_counter()
    cache = cache_features(
        source, names, data.x_train, data.x_val, data.x_test, chunk_size=config.chunk_size
    )
    kept, skipped = (names, []) if explicit else _distinct_layers(cache)
    if skipped:
        _logger.info("Skipped layers %s: their features equal the previous layer's.", skipped)
    fitted: list[tuple[FittedHead, LayerResult]] = []
    for name in kept:
        fitted.extend(_fit_heads(cache.layers[name], data, config, device))
    best_head, best = fitted[0]
    for head, result in fitted[1:]:
        if result.val_accuracy > best.val_accuracy:
            best_head, best = head, result
    synchronize(device)
    seconds = time.perf_counter() - start

    _logger.info(
        "Pullback chose layer %s (%s head): validation %.4f, test %.4f, %.3f s in all.",
        best.layer, best.head, best.val_accuracy, best.test_accuracy, seconds,
    )  # fmt: skip
    return PullbackResult(
        results=[result for _, result in fitted],
        chosen=best,
        model=pullback_model(source, best.layer, best_head.module),
        feature_seconds=cache.seconds,
        seconds=seconds,
        layers_skipped=skipped,
    )
