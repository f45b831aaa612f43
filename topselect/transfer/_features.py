"""Features of the frozen source model at its cut layers, computed once and cached."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from topselect.exceptions import InvalidInputError
from topselect.transfer._layers import capture_outputs, check_layers

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["FeatureCache", "LayerFeatures", "cache_features", "compute_features", "model_device"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerFeatures:
    """Cached features of one cut layer, on the source model's device.

    Attributes:
        layer: Module name of the cut.
        train: Features of the target training set, ``(n_train, dim)``.
        val: Features of the validation set, ``(n_val, dim)``.
        test: Features of the test set, ``(n_test, dim)``.
    """

    layer: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    @property
    def dim(self) -> int:
        """Number of feature columns."""
        return int(self.train.shape[1])


@dataclass(frozen=True)
class FeatureCache:
    """Features of every cut layer, from one pass of the frozen model over the data.

    Attributes:
        layers: Cached features by layer name, in the order requested.
        seconds: Wall time of computing them, in seconds.
        device: Device of the cached features (the model's).
    """

    layers: dict[str, LayerFeatures]
    seconds: float
    device: str


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the model's first parameter or buffer (CPU when it has none)."""
    import torch

    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode and restore every submodule's mode afterwards."""
    modes = [module.training for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in zip(model.modules(), modes, strict=True):
            module.training = training


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work on ``device``, so that wall times include it."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compute_features(
    model: nn.Module, layers: Sequence[str], x: torch.Tensor, *, chunk_size: int = 1024
) -> dict[str, torch.Tensor]:
    """Compute the flattened outputs of ``layers`` for every example of ``x``.

    The model runs in eval mode without gradients, ``chunk_size`` examples at a time.
    Each chunk is moved to the model's device, and the features stay there. The
    model's train/eval modes are restored afterwards.

    Args:
        model: The source model.
        layers: Cut layer names (see :func:`topselect.transfer.layer_names`).
        x: Inputs ``(n, ...)`` on any device.
        chunk_size: Examples per forward pass (>= 1).

    Returns:
        Features ``(n, dim)`` by layer name, float tensors on the model's device.

    Raises:
        InvalidInputError: For an unknown layer name, an empty ``x`` or a bad chunk size.
    """
    import torch

    names = check_layers(model, layers)
    if chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be >= 1, but got {chunk_size}.")
    if len(x) == 0:
        raise InvalidInputError("x must contain at least one example, but it is empty.")
    device = model_device(model)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    with eval_mode(model), torch.no_grad():
        for chunk in x.split(chunk_size):
            outputs = capture_outputs(model, chunk.to(device), names)
            for name in names:
                parts[name].append(outputs[name])
    return {name: torch.cat(parts[name]) for name in names}


def cache_features(
    model: nn.Module,
    layers: Sequence[str],
    x_train: torch.Tensor,
    x_val: torch.Tensor,
    x_test: torch.Tensor,
    *,
    chunk_size: int = 1024,
) -> FeatureCache:
    """Compute and cache the features of the three target sets at every cut layer.

    Args:
        model: The frozen source model; its parameters are only read.
        layers: Cut layer names.
        x_train: Target training inputs ``(n_train, ...)``.
        x_val: Validation inputs ``(n_val, ...)``.
        x_test: Test inputs ``(n_test, ...)``.
        chunk_size: Examples per forward pass.

    Raises:
        InvalidInputError: See :func:`compute_features`.
    """
    device = model_device(model)
    synchronize(device)
    start = time.perf_counter()
    parts = [
        compute_features(model, layers, x, chunk_size=chunk_size) for x in (x_train, x_val, x_test)
    ]
    synchronize(device)
    seconds = time.perf_counter() - start
    cached = {
        name: LayerFeatures(name, parts[0][name], parts[1][name], parts[2][name])
        for name in layers
    }
    _logger.info(
        "Cached features of %d layers (%s) in %.3f s.",
        len(cached),
        ", ".join(f"{n}: {f.dim}" for n, f in cached.items()),
        seconds,
    )
    return FeatureCache(layers=cached, seconds=seconds, device=str(device))
