"""Loss barrier on the straight line between two parameter vectors."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np
from numpy.typing import NDArray

from topselect.exceptions import InvalidInputError
from topselect.landscape import (
    LossFn,
    ParameterEvaluator,
    ProbeSet,
    eval_mode,
    parameters_of,
    unflatten_parameters,
)

if TYPE_CHECKING:
    import torch

__all__ = ["BarrierResult", "ParameterSource", "loss_barrier"]

#: Parameters given as a model, a mapping from parameter name to tensor, or one flat tensor
#: in the order of ``model.parameters()``.
ParameterSource = Union["torch.nn.Module", Mapping[str, "torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class BarrierResult:
    """Loss along the segment between two parameter vectors.

    Attributes:
        barrier: ``max_alpha L((1 - alpha) a + alpha b) - ((1 - alpha) L(a) + alpha L(b))``
            over the interior grid points, in loss units. It is 0 for identical endpoints
            and negative when the segment lies below the chord everywhere.
        alphas: Interpolation weights ``(n_points,)`` from 0 to 1.
        losses: Probe-set loss at each alpha, ``(n_points,)``.
    """

    barrier: float
    alphas: NDArray[np.float64]
    losses: NDArray[np.float64]


def loss_barrier(
    model: torch.nn.Module,
    loss_fn: LossFn,
    probe: ProbeSet,
    a: ParameterSource,
    b: ParameterSource,
    *,
    n_points: int = 11,
) -> BarrierResult:
    """Measure the loss barrier between parameters ``a`` and ``b`` of ``model``'s architecture.

    The loss is evaluated on the probe set at ``n_points`` evenly spaced points of the
    segment, endpoints included. Interpolation weights are exact complements
    (``k / (n - 1)`` and ``(n - 1 - k) / (n - 1)``), so swapping ``a`` and ``b`` gives the
    same barrier bit for bit. When the model has BatchNorm layers, their running
    statistics are re-estimated on the probe inputs at every interpolated point (on a
    copy of the model). ``model`` itself is never modified.

    Args:
        model: Network whose architecture both parameter sets share.
        loss_fn: ``loss_fn(outputs, targets)`` giving the mean loss as a scalar tensor.
        probe: Probe set on which losses are measured.
        a: First endpoint: a model, a name-to-tensor mapping, or a flat tensor.
        b: Second endpoint, in any of the same forms.
        n_points: Points on the segment, endpoints included (>= 3).

    Returns:
        The barrier, the interpolation weights and the losses.

    Raises:
        InvalidInputError: When ``n_points < 3`` or a parameter set does not match the
            model's parameter names and shapes.
    """
    if n_points < 3:
        raise InvalidInputError(
            f"n_points must be >= 3 to have an interior point, got {n_points}."
        )
    reference = parameters_of(model)
    params_a = _as_mapping(a, reference, "a")
    params_b = _as_mapping(b, reference, "b")
    has_batchnorm = _has_batchnorm(model)
    evaluator = ParameterEvaluator(model, loss_fn, probe)
    steps = n_points - 1
    losses = np.empty(n_points)
    with eval_mode(model):
        for k in range(n_points):
            weight_b, weight_a = k / steps, (steps - k) / steps
            point = {
                name: _interpolate(params_a[name], params_b[name], weight_a, weight_b)
                for name in reference
            }
            if has_batchnorm:
                losses[k] = _loss_with_fresh_batchnorm(model, loss_fn, probe, point)
            else:
                losses[k] = evaluator.loss(point)
    alphas = np.arange(n_points) / steps
    # The same exact complements as the points, so swapping a and b gives the same bits,
    # and equal end losses give a chord equal to that loss.
    if losses[0] == losses[-1]:
        chord = np.full(n_points, losses[0])
    else:
        chord = (steps - np.arange(n_points)) / steps * losses[0] + alphas * losses[-1]
    barrier = float(np.max(losses[1:-1] - chord[1:-1]))
    return BarrierResult(barrier=barrier, alphas=alphas, losses=losses)


def _as_mapping(
    source: ParameterSource, reference: dict[str, torch.Tensor], label: str
) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(source, torch.nn.Module):
        source = parameters_of(source)
    if isinstance(source, torch.Tensor):
        return unflatten_parameters(source, reference, label)
    mapping = {name: t.detach() for name, t in source.items()}
    if mapping.keys() != reference.keys():
        missing = sorted(reference.keys() - mapping.keys())
        extra = sorted(mapping.keys() - reference.keys())
        raise InvalidInputError(
            f"parameters {label} do not match the model: missing {missing}, unexpected {extra}."
        )
    for name, ref in reference.items():
        if mapping[name].shape != ref.shape:
            raise InvalidInputError(
                f"parameter {name!r} of {label} has shape {tuple(mapping[name].shape)}, "
                f"but the model's has {tuple(ref.shape)}."
            )
        mapping[name] = mapping[name].to(device=ref.device, dtype=ref.dtype)
    return mapping


def _has_batchnorm(model: torch.nn.Module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _loss_with_fresh_batchnorm(
    model: torch.nn.Module, loss_fn: LossFn, probe: ProbeSet, point: dict[str, torch.Tensor]
) -> float:
    """Return the loss at ``point`` after recomputing BatchNorm statistics on the probe set."""
    import torch

    clone = copy.deepcopy(model)
    with torch.no_grad():
        for name, tensor in clone.named_parameters():
            if name in point:
                tensor.copy_(point[name])
        clone.eval()  # Dropout stays off while BatchNorm layers collect statistics.
        for module in clone.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # A cumulative average rather than an EMA.
                module.train()
        device = next(clone.parameters()).device
        inputs = probe.inputs.to(device)
        clone(inputs)
        clone.eval()
        return float(loss_fn(clone(inputs), probe.targets.to(device)))


def _interpolate(
    a: torch.Tensor, b: torch.Tensor, weight_a: float, weight_b: float
) -> torch.Tensor:
    """Return ``weight_a * a + weight_b * b``, exactly ``a`` wherever ``a`` equals ``b``."""
    import torch

    return torch.where(a == b, a, weight_a * a + weight_b * b)
