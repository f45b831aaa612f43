"""Loss barrier on the straight line between two parameter vectors."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Union

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

__all__ = [
    "BarrierResult",
    "BarrierStrategy",
    "ParameterSource",
    "SegmentEvaluator",
    "loss_barrier",
]

_logger = logging.getLogger(__name__)

#: Parameters given as a model, a mapping from parameter name to tensor, or one flat tensor
#: in the order of ``model.parameters()``.
ParameterSource = Union["torch.nn.Module", Mapping[str, "torch.Tensor"], "torch.Tensor"]

#: Evaluation strategy of the points of a segment: ``"loop"`` (one forward pass per
#: point), ``"vmap"`` (many points per pass with ``torch.vmap``) or ``"auto"`` (per model).
BarrierStrategy = Literal["auto", "loop", "vmap"]

# Points stacked into one vmapped pass are capped so that their parameters take at most
# this many bytes, whatever the model size.
_VMAP_MEMORY_BYTES = 256 * 2**20
# Largest model for which "auto" picks vmap on CPU. On 2 CPU cores vmap was 1.4-1.8x
# faster than the loop for MLPs of 2-9k parameters and tied at 43k. For a convolutional
# model it was 4-5x slower (BENCHMARKS.md, landscape probe sections).
_CPU_VMAP_MAX_PARAMETERS = 40_000


@dataclass(frozen=True)
class BarrierResult:
    """Loss along the segment between two parameter vectors.

    Attributes:
        barrier: ``max_alpha L((1 - alpha) a + alpha b) - ((1 - alpha) L(a) + alpha L(b))``
            over the interior grid points, in loss units. It is 0 for identical endpoints
            and negative when the segment lies below the chord everywhere. It is NaN when
            a loss on the segment is NaN.
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
    strategy: BarrierStrategy = "auto",
) -> BarrierResult:
    """Measure the loss barrier between parameters ``a`` and ``b`` of ``model``'s architecture.

    The loss is evaluated on the probe set at ``n_points`` evenly spaced points of the
    segment, endpoints included, in one batched pass where the strategy allows. The
    segment is always evaluated from the endpoint that sorts first (by the first
    coordinate where the two differ) and the losses reversed when needed, and the
    interpolation weights are exact complements, so ``B(a, b) == B(b, a)`` bit for bit
    with either strategy. Identical endpoints give a barrier of exactly 0. When the
    model has BatchNorm layers, their running statistics are re-estimated on the probe
    inputs at every interpolated point (on a copy of the model). ``model`` itself is
    never modified.

    Args:
        model: Network whose architecture both parameter sets share.
        loss_fn: ``loss_fn(outputs, targets)`` giving the mean loss as a scalar tensor.
        probe: Probe set on which losses are measured.
        a: First endpoint: a model, a name-to-tensor mapping, or a flat tensor.
        b: Second endpoint, in any of the same forms.
        n_points: Points on the segment, endpoints included (>= 3).
        strategy: ``"loop"``, ``"vmap"`` or ``"auto"`` (vmap on accelerators, and on CPU
            for models without convolutions of at most 40,000 parameters). Models with
            BatchNorm always use the loop, because their statistics are re-estimated
            point by point.

    Returns:
        The barrier, the interpolation weights and the losses.

    Raises:
        InvalidInputError: When ``n_points < 3``, ``strategy`` is unknown, or a parameter
            set does not match the model's parameter names and shapes.
    """
    segments = SegmentEvaluator(model, loss_fn, probe, n_points=n_points, strategy=strategy)
    reference = segments.reference
    flat_a = _as_flat(a, reference, "a")
    flat_b = _as_flat(b, reference, "b")
    return segments.barriers([(flat_a, flat_b)])[0]


class SegmentEvaluator:
    """Evaluate loss barriers of many segments of one architecture, batched over points.

    Building one evaluator and passing it every segment of a comparison keeps the model
    inspection, the probe transfer and the BatchNorm copy out of the per-segment cost.

    Args:
        model: Network whose architecture every endpoint shares (only read).
        loss_fn: ``loss_fn(outputs, targets)`` giving the mean loss as a scalar tensor.
        probe: Probe set on which losses are measured.
        n_points: Points on each segment, endpoints included (>= 3).
        strategy: See :func:`loss_barrier`.

    Raises:
        InvalidInputError: When ``n_points < 3``, ``strategy`` is unknown, or the model has
            no floating-point parameters.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        probe: ProbeSet,
        *,
        n_points: int = 11,
        strategy: BarrierStrategy = "auto",
    ) -> None:
        if n_points < 3:
            raise InvalidInputError(
                f"n_points must be >= 3 to have an interior point, got {n_points}."
            )
        if strategy not in ("auto", "loop", "vmap"):
            raise InvalidInputError(
                f"strategy must be 'auto', 'loop' or 'vmap', but got {strategy!r}."
            )
        self.model = model
        self.loss_fn = loss_fn
        self.probe = probe
        self.n_points = n_points
        self.reference = parameters_of(model)
        if not self.reference:
            raise InvalidInputError("model has no floating-point parameters to interpolate.")
        self.n_parameters = sum(t.numel() for t in self.reference.values())
        self.has_batchnorm = _has_batchnorm(model)
        # Points are interpolated in float32, or float64 when the model has such weights.
        self.flat_dtype = _flat_dtype(self.reference)
        self.evaluator = ParameterEvaluator(model, loss_fn, probe)
        self.strategy = self._choose_strategy(strategy)
        self._batchnorm_copy: torch.nn.Module | None = None

    def barriers(
        self, segments: Sequence[tuple[torch.Tensor, torch.Tensor]]
    ) -> list[BarrierResult]:
        """Return the barrier of each ``(a, b)`` pair of flat parameter vectors.

        Every flat vector has the model's parameter count and the order of
        ``model.parameters()``; any dtype and device. With the vmap strategy the points of
        all segments are evaluated together, in chunks under a fixed memory budget.
        """
        oriented = [self._orient(a, b) for a, b in segments]
        steps = self.n_points - 1
        alphas = np.arange(self.n_points) / steps
        points: list[torch.Tensor] = []
        for start, end, identical, _ in oriented:
            points.extend([start] if identical else _segment_points(start, end, steps))
        losses = self._losses(points)
        results: list[BarrierResult] = []
        offset = 0
        for _, _, identical, swapped in oriented:
            if identical:
                segment = np.full(self.n_points, losses[offset])
                offset += 1
            else:
                segment = np.asarray(losses[offset : offset + self.n_points])
                offset += self.n_points
            result = _barrier_from_losses(segment, alphas)
            results.append(_reversed(result) if swapped else result)
        return results

    # -- evaluation -------------------------------------------------------------------

    def _choose_strategy(self, strategy: BarrierStrategy) -> str:
        if self.has_batchnorm:
            return "loop"
        if strategy != "auto":
            return strategy
        if self.evaluator.device.type != "cpu":
            return "vmap"
        if _has_convolution(self.model) or self.n_parameters > _CPU_VMAP_MAX_PARAMETERS:
            return "loop"
        return "vmap"

    def _orient(
        self, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
        """Return ``(start, end, identical, swapped)`` with ``start`` sorting first."""
        import torch

        flat_a = self._check_flat(a, "a")
        flat_b = self._check_flat(b, "b")
        swapped = _sorts_after(flat_a, flat_b)
        if swapped:
            flat_a, flat_b = flat_b, flat_a
        return flat_a, flat_b, bool(torch.equal(flat_a, flat_b)), swapped

    def _check_flat(self, flat: torch.Tensor, label: str) -> torch.Tensor:

        if flat.dim() != 1 or flat.numel() != self.n_parameters:
            raise InvalidInputError(
                f"flat parameters {label} must have shape ({self.n_parameters},) to match "
                f"the model, but got {tuple(flat.shape)}."
            )
        return flat.detach().to(self.evaluator.device, self.flat_dtype)

    def _losses(self, points: list[torch.Tensor]) -> list[float]:
        if not points:
            return []
        with eval_mode(self.model):
            if self.has_batchnorm:
                return [self._batchnorm_loss(p) for p in points]
            if self.strategy == "loop":
                return [self.evaluator.loss(self._unflatten(p)) for p in points]
            return self._vmap_losses(points)

    def _vmap_losses(self, points: list[torch.Tensor]) -> list[float]:
        import torch

        chunk = max(1, _VMAP_MEMORY_BYTES // (4 * self.n_parameters))
        losses: list[float] = []
        for start in range(0, len(points), chunk):
            stacked = torch.stack(points[start : start + chunk])
            params = {}
            offset = 0
            for name, ref in self.reference.items():
                part = stacked[:, offset : offset + ref.numel()]
                params[name] = part.reshape(-1, *ref.shape).to(ref.dtype)
                offset += ref.numel()
            losses.extend(self.evaluator.batched_losses(params))
        return losses

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return unflatten_parameters(flat, self.reference)

    def _batchnorm_loss(self, flat: torch.Tensor) -> float:
        """Return the loss at ``flat`` after re-estimating BatchNorm statistics on the probe."""
        import torch

        if self._batchnorm_copy is None:
            self._batchnorm_copy = copy.deepcopy(self.model)
        clone = self._batchnorm_copy
        point = self._unflatten(flat)
        device = self.evaluator.device
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
            inputs = self.probe.inputs.to(device)
            clone(inputs)
            clone.eval()
            return float(self.loss_fn(clone(inputs), self.probe.targets.to(device)))


def _segment_points(start: torch.Tensor, end: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Return ``steps + 1`` points from ``start`` to ``end`` with exact complement weights."""
    import torch

    same = start == end
    points = []
    for k in range(steps + 1):
        weight_end, weight_start = k / steps, (steps - k) / steps
        # Coordinates where the endpoints agree stay exactly equal to them.
        points.append(torch.where(same, start, weight_start * start + weight_end * end))
    return points


def _barrier_from_losses(
    losses: NDArray[np.float64], alphas: NDArray[np.float64]
) -> BarrierResult:
    steps = len(losses) - 1
    # Equal end losses give a chord equal to that loss exactly, free of rounding.
    if losses[0] == losses[-1]:
        chord = np.full(len(losses), losses[0])
    else:
        chord = (steps - np.arange(len(losses))) / steps * losses[0] + alphas * losses[-1]
    excess = losses[1:-1] - chord[1:-1]
    barrier = float("nan") if np.isnan(excess).any() else float(np.max(excess))
    return BarrierResult(barrier=barrier, alphas=alphas, losses=losses)


def _reversed(result: BarrierResult) -> BarrierResult:
    return BarrierResult(
        barrier=result.barrier, alphas=result.alphas, losses=result.losses[::-1].copy()
    )


def _sorts_after(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` sorts after ``b`` at the first coordinate where they differ.

    NaN sorts after every number, so the order is total and ``(a, b)`` and ``(b, a)``
    always get opposite results unless the vectors are equal.
    """
    import torch

    differ = ~((a == b) | (torch.isnan(a) & torch.isnan(b)))
    index = torch.nonzero(differ)
    if index.numel() == 0:
        return False
    first = int(index[0, 0])
    value_a, value_b = float(a[first]), float(b[first])
    if np.isnan(value_a) or np.isnan(value_b):
        return bool(np.isnan(value_a))
    return value_a > value_b


def _as_flat(
    source: ParameterSource, reference: dict[str, torch.Tensor], label: str
) -> torch.Tensor:
    """Return ``source`` as one flat vector in the order of ``reference``."""
    import torch

    if isinstance(source, torch.Tensor):
        unflatten_parameters(source, reference, label)  # Raises on a length mismatch.
        return source.detach()
    if isinstance(source, torch.nn.Module):
        source = parameters_of(source)
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
    dtype = _flat_dtype(reference)
    return torch.cat(
        [mapping[name].reshape(-1).to(ref.device, dtype) for name, ref in reference.items()]
    )


def _flat_dtype(reference: dict[str, torch.Tensor]) -> torch.dtype:
    import torch

    if any(t.dtype == torch.float64 for t in reference.values()):
        return torch.float64
    return torch.float32


def _has_batchnorm(model: torch.nn.Module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _has_convolution(model: torch.nn.Module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
