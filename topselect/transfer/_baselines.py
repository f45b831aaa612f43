"""The baselines pullback transfer is measured against, all on one training budget.

* ``finetune``: a copy of the source model with a new output layer, every parameter
  trained.
* ``scratch``: the same architecture with every parameter re-initialized, trained alike.
* ``lp_ft``: linear probe, then fine-tune. The new output layer starts from a linear
  head fitted on the cached inputs of the output layer, then every parameter is trained.

Each works on a deep copy, so the source model is never changed. Wall time runs from the
copy to the end of training; the final test evaluation is not timed.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from topselect.exceptions import InvalidInputError
from topselect.transfer._config import BASELINES, TransferConfig
from topselect.transfer._features import eval_mode, model_device, synchronize
from topselect.transfer._heads import (
    FittedHead,
    StandardizedHead,
    fit_logistic_head,
    fit_ridge_head,
)
from topselect.transfer._layers import capture_outputs, replace_module

if TYPE_CHECKING:
    import torch
    from torch import nn

    from topselect.datasets import DataSplit

__all__ = ["BaselineResult", "check_baselines", "evaluate_accuracy", "run_baseline"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaselineResult:
    """Outcome of one baseline.

    Attributes:
        name: ``"finetune"``, ``"scratch"`` or ``"lp_ft"``.
        test_accuracy: Accuracy on the target test set, a fraction in [0, 1].
        val_accuracy: Validation accuracy of the kept parameters.
        seconds: Wall time of building and training the model, in seconds.
        epochs: Epochs trained.
        best_epoch: Epoch whose parameters were kept (1-based; ``epochs`` without
            ``keep_best``).
        details: Extra facts (the linear probe's penalty and time for ``lp_ft``).
    """

    name: str
    test_accuracy: float
    val_accuracy: float
    seconds: float
    epochs: int
    best_epoch: int
    details: dict[str, Any] = field(default_factory=dict)


def evaluate_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int = 1024
) -> float:
    """Return the fraction of ``x`` that ``model`` classifies as ``y`` (eval mode, chunked).

    The model's train/eval modes are restored afterwards.
    """
    import torch

    device = model_device(model)
    correct = 0
    with eval_mode(model), torch.no_grad():
        for inputs, labels in zip(x.split(chunk_size), y.split(chunk_size), strict=True):
            predictions = model(inputs.to(device)).argmax(dim=1)
            correct += int((predictions == labels.to(device)).sum())
    return correct / max(len(y), 1)


def _new_linear(old: nn.Module, n_classes: int, seed: int) -> nn.Module:
    import torch
    from torch import nn

    assert isinstance(old, nn.Linear), "find_head returns an nn.Linear"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = nn.Linear(old.in_features, n_classes, bias=old.bias is not None)
    return linear.to(device=old.weight.device, dtype=old.weight.dtype)


def _finetune_model(source: nn.Module, head: str, n_classes: int, seed: int) -> nn.Module:
    model = copy.deepcopy(source)
    replace_module(model, head, _new_linear(model.get_submodule(head), n_classes, seed))
    return model.requires_grad_(True)


def check_baselines(names: Sequence[str], source: nn.Module) -> list[str]:
    """Return ``names`` as a list after checking each baseline can run on ``source``.

    Raises:
        InvalidInputError: For an unknown or repeated name, or ``"scratch"`` with a
            module that has parameters but no ``reset_parameters()``.
    """
    chosen = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in chosen if name not in BASELINES]
    if unknown or len(set(chosen)) != len(chosen):
        raise InvalidInputError(
            f"baselines must be distinct names from {list(BASELINES)}, but got {chosen}."
        )
    if "scratch" in chosen:
        _resettable_modules(source)
    return chosen


def _resettable_modules(model: nn.Module) -> list[nn.Module]:
    modules = []
    for name, module in model.named_modules():
        if next(module.parameters(recurse=False), None) is None:
            continue
        if not callable(getattr(module, "reset_parameters", None)):
            raise InvalidInputError(
                f"the scratch baseline cannot re-initialize module {name!r} "
                f"({type(module).__name__}), which has parameters but no "
                f"reset_parameters(); leave 'scratch' out of baselines."
            )
        modules.append(module)
    return modules


def _scratch_model(source: nn.Module, head: str, n_classes: int, seed: int) -> nn.Module:
    import torch

    model = copy.deepcopy(source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in _resettable_modules(model):
            getattr(module, "reset_parameters")()  # noqa: B009 (checked callable above)
    replace_module(model, head, _new_linear(model.get_submodule(head), n_classes, seed))
    return model.requires_grad_(True)


def _lp_model(
    source: nn.Module, head: str, data: DataSplit, config: TransferConfig
) -> tuple[nn.Module, FittedHead]:
    """Fit a linear head on the output layer's inputs and fold it into a fine-tune copy."""
    import torch
    from torch import nn

    features = {}
    with eval_mode(source), torch.no_grad():
        device = model_device(source)
        for split, x in (("train", data.x_train), ("val", data.x_val)):
            chunks = [
                capture_outputs(source, c.to(device), [head], inputs_of=True)[head]
                for c in x.split(config.chunk_size)
            ]
            features[split] = torch.cat(chunks)
    labels = (data.y_train.to(device), data.y_val.to(device))
    if config.linear_solver == "ridge":
        fitted = fit_ridge_head(
            features["train"], labels[0], features["val"], labels[1], data.n_classes,
            config.ridge_penalties,
        )  # fmt: skip
    else:
        fitted = fit_logistic_head(
            features["train"], labels[0], features["val"], labels[1], data.n_classes,
            penalty=config.lbfgs_penalty, max_iter=config.lbfgs_max_iter,
        )  # fmt: skip
    model = _finetune_model(source, head, data.n_classes, config.seed)
    linear = model.get_submodule(head)
    assert isinstance(linear, nn.Linear), "find_head returns an nn.Linear"
    assert isinstance(fitted.module, StandardizedHead), "linear heads are standardized"
    weight, bias = fitted.module.folded_linear()
    with torch.no_grad():
        linear.weight.copy_(weight)
        if linear.bias is not None:
            linear.bias.copy_(bias)
    return model, fitted


def _train(model: nn.Module, data: DataSplit, config: TransferConfig) -> tuple[float, int]:
    """Train every parameter with Adam; return the kept validation accuracy and epoch."""
    import torch
    import torch.nn.functional as F

    device = model_device(model)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    order = torch.Generator().manual_seed(config.seed)
    best_accuracy, best_epoch, best_state = -1.0, 0, None
    for epoch in range(1, config.epochs + 1):
        model.train()
        for index in torch.randperm(len(data.x_train), generator=order).split(config.batch_size):
            optimizer.zero_grad()
            outputs = model(data.x_train[index].to(device))
            F.cross_entropy(outputs, data.y_train[index].to(device)).backward()
            optimizer.step()
        if not config.keep_best and epoch < config.epochs:
            continue
        accuracy = evaluate_accuracy(model, data.x_val, data.y_val, chunk_size=config.chunk_size)
        if accuracy > best_accuracy or not config.keep_best:
            best_accuracy, best_epoch = accuracy, epoch
            if config.keep_best:
                best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return best_accuracy, best_epoch


def run_baseline(
    name: str, source: nn.Module, head: str, data: DataSplit, config: TransferConfig
) -> BaselineResult:
    """Build, train and test one baseline on a copy of ``source``.

    Args:
        name: ``"finetune"``, ``"scratch"`` or ``"lp_ft"``.
        source: The source model; only copied.
        head: Name of its output ``nn.Linear``, replaced by one with ``data.n_classes``
            outputs.
        data: Target data.
        config: Budget and seed.

    Raises:
        InvalidInputError: For an unknown name, or a ``scratch`` model with a module that
            cannot be re-initialized.
    """
    builders: dict[str, Callable[[], tuple[nn.Module, dict[str, Any]]]] = {
        "finetune": lambda: (_finetune_model(source, head, data.n_classes, config.seed), {}),
        "scratch": lambda: (_scratch_model(source, head, data.n_classes, config.seed), {}),
        "lp_ft": lambda: _lp_ft(source, head, data, config),
    }
    if name not in builders:
        raise InvalidInputError(f"unknown baseline {name!r}; choose from {sorted(builders)}.")
    device = model_device(source)
    synchronize(device)
    start = time.perf_counter()
    model, details = builders[name]()
    val_accuracy, best_epoch = _train(model, data, config)
    synchronize(device)
    seconds = time.perf_counter() - start
    test_accuracy = evaluate_accuracy(
        model, data.x_test, data.y_test, chunk_size=config.chunk_size
    )
    _logger.info(
        "Baseline %s: test accuracy %.4f, validation %.4f (epoch %d of %d), %.3f s.",
        name, test_accuracy, val_accuracy, best_epoch, config.epochs, seconds,
    )  # fmt: skip
    return BaselineResult(
        name, test_accuracy, val_accuracy, seconds, config.epochs, best_epoch, details
    )


def _lp_ft(
    source: nn.Module, head: str, data: DataSplit, config: TransferConfig
) -> tuple[nn.Module, dict[str, Any]]:
    start = time.perf_counter()
    model, fitted = _lp_model(source, head, data, config)
    details = {
        "probe_val_accuracy": fitted.val_accuracy,
        "probe_seconds": time.perf_counter() - start,
        **{f"probe_{k}": v for k, v in fitted.details.items()},
    }
    return model, details
