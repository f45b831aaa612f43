"""Evaluation of the probe-set loss at many points of a low-dimensional parameter subspace.

A point is ``theta + sum_j c[j] * d_j`` for trained parameters ``theta``, directions
``d_1 .. d_k`` and coefficients ``c``. Three strategies evaluate a batch of points:

- ``loop``: one ``functional_call`` per point. Works for any model.
- ``vmap``: ``torch.vmap`` over a chunk of points. Fails on models that read tensor
  values in Python (``.item()``, data-dependent branches).
- ``stacked``: explicit batched matrix products for ``nn.Sequential`` stacks of
  ``nn.Linear`` layers and element-wise modules. The first layer uses linearity,
  ``x (W + a D1 + b D2)^T = x W^T + a x D1^T + b x D2^T``, so its matrix product is computed
  once per call instead of once per point; later layers use ``torch.baddbmm``.

Every strategy evaluates each point's loss on that point's outputs alone, so all three
agree to float rounding. The loop and vmap call the caller's ``loss_fn``. The stacked
engine vmaps it over a chunk. For plain cross-entropy it makes one call per chunk
instead, in a faster memory layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from topselect.exceptions import InvalidInputError
from topselect.landscape._evaluate import (
    are_class_indices,
    class_major_pays,
    is_plain_cross_entropy,
)

if TYPE_CHECKING:
    import torch

    from topselect.landscape._evaluate import ParameterEvaluator

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "STRATEGIES",
    "EvaluationPlan",
    "choose_strategy",
    "evaluate_points",
    "plan_evaluation",
]

Strategy = Literal["auto", "loop", "vmap", "stacked"]
STRATEGIES = ("auto", "loop", "vmap", "stacked")

#: Default bound, in bytes, on the memory one chunk of points may use for parameters and
#: activations. Chunks stay smaller on the CPU (see ``_CPU_CHUNK_CAP``).
DEFAULT_MEMORY_BUDGET = 512 * 2**20

# On 2 CPU cores, vmap beat the loop 1.4-1.8x for digits MLPs of 2-9k parameters and tied
# at 43k. For a 3k-parameter MNIST-1D CNN it was 4-5x slower, because vmapped weights turn
# each convolution into a grouped one (BENCHMARKS.md).
_CPU_VMAP_MAX_PARAMETERS = 40_000

# Largest chunk on the CPU. On 2 cores with a 64-64-64-10 MLP, 512 probe examples and a
# 31 x 31 grid (benchmarks/probe_engine.py), vmap took 0.19 s at 32-64 points per chunk and
# 0.35 s at 256. The stacked engine took 0.12-0.13 s at 8-32 and 0.29 s at 256. Larger
# chunks push the activations out of cache.
_CPU_CHUNK_CAP = {"vmap": 64, "stacked": 16}

# Element-wise modules the stacked engine applies to a (points, examples, features)
# tensor unchanged. Dropout is listed because probes run in eval mode, where it is the
# identity.
_ELEMENTWISE_NAMES = (
    "Identity",
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "SELU",
    "CELU",
    "GELU",
    "SiLU",
    "Mish",
    "Tanh",
    "Sigmoid",
    "Softplus",
    "Hardtanh",
    "Hardswish",
    "Hardsigmoid",
    "Dropout",
    "AlphaDropout",
)


@dataclass(frozen=True)
class EvaluationPlan:
    """Strategy and chunk size chosen for evaluating a batch of points.

    Attributes:
        strategy: ``"loop"``, ``"vmap"`` or ``"stacked"``.
        chunk_size: Points per batched call (1 for the loop).
        bytes_per_point: Estimated memory one point needs within a chunk: its parameters
            plus the activations of every probe example, in bytes.
        memory_budget: The bound the chunk size was derived from, in bytes.
    """

    strategy: str
    chunk_size: int
    bytes_per_point: int
    memory_budget: int


def choose_strategy(
    requested: str, device_type: str, n_parameters: int, has_convolution: bool, stackable: bool
) -> str:
    """Resolve ``"auto"`` to a concrete strategy; return any other request unchanged.

    ``auto`` picks ``stacked`` for any model the stacked engine supports, then the loop on
    the CPU for convolutional models or models over 40,000 parameters, and vmap otherwise.
    """
    # NOTE: rules from CPU measurements of two model families; GPUs have not been
    # measured yet.
    if requested != "auto":
        return requested
    if stackable:
        return "stacked"
    if device_type == "cpu" and (has_convolution or n_parameters > _CPU_VMAP_MAX_PARAMETERS):
        return "loop"
    return "vmap"


def plan_evaluation(
    evaluator: ParameterEvaluator,
    strategy: str,
    chunk_size: int | None,
    memory_budget: int,
    n_points: int,
) -> EvaluationPlan:
    """Pick the chunk size of a concrete strategy from the memory budget.

    Args:
        evaluator: Evaluator of the model and probe set.
        strategy: ``"loop"``, ``"vmap"`` or ``"stacked"``.
        chunk_size: Points per batched call; ``None`` derives it from ``memory_budget``
            (at most 64 for vmap and 16 for the stacked engine on the CPU).
        memory_budget: Bytes one chunk may use for parameters and activations.
        n_points: Number of points to evaluate; no chunk is larger.

    Raises:
        InvalidInputError: When ``chunk_size`` is given and one chunk would exceed the
            budget.
    """
    per_point = _bytes_per_point(evaluator)
    if strategy == "loop":
        return EvaluationPlan("loop", 1, per_point, memory_budget)
    fitting = max(1, memory_budget // per_point)
    if chunk_size is None:
        chunk = min(fitting, n_points)
        if evaluator.device.type == "cpu":
            chunk = min(chunk, _CPU_CHUNK_CAP[strategy])
    else:
        if chunk_size * per_point > memory_budget:
            raise InvalidInputError(
                f"chunk_size={chunk_size} needs about {chunk_size * per_point / 2**20:.1f} MiB "
                f"({per_point} bytes per point), more than memory_budget={memory_budget} "
                f"bytes. Use chunk_size <= {fitting} or raise memory_budget."
            )
        chunk = min(chunk_size, n_points)
    return EvaluationPlan(strategy, max(1, chunk), per_point, memory_budget)


def evaluate_points(
    evaluator: ParameterEvaluator,
    params: dict[str, torch.Tensor],
    directions: Sequence[dict[str, torch.Tensor]],
    coefficients: NDArray[np.float64],
    plan: EvaluationPlan,
    autocast_dtype: torch.dtype | None = None,
) -> NDArray[np.float64]:
    """Return the probe-set loss at ``theta + coefficients[i] @ directions`` for every row.

    Args:
        evaluator: Evaluator of the model and probe set. The caller keeps the model in
            eval mode.
        params: Trained parameters ``theta`` by name.
        directions: ``k`` mappings shaped like ``params``.
        coefficients: Array of shape ``(m, k)``. A row of zeros gives exactly ``theta``.
        plan: Strategy and chunk size from :func:`plan_evaluation`.
        autocast_dtype: When given, forward passes run under ``torch.autocast`` with this
            dtype (mixed precision, e.g. ``torch.bfloat16``).

    Returns:
        Array of shape ``(m,)`` of float64 losses; NaN or inf where the model diverged.
    """
    import torch

    coefficients = np.asarray(coefficients, dtype=np.float64)
    autocast = (
        torch.autocast(evaluator.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else nullcontext()
    )
    with torch.no_grad(), autocast:
        if plan.strategy == "loop":
            return _loop_points(evaluator, params, directions, coefficients)
        if plan.strategy == "vmap":
            return _vmap_points(evaluator, params, directions, coefficients, plan.chunk_size)
        if plan.strategy == "stacked":
            steps = stack_steps(evaluator.model)
            if steps is None:
                raise InvalidInputError(
                    "strategy='stacked' needs an nn.Sequential of nn.Linear layers and "
                    "element-wise modules without hooks; use 'auto', 'vmap' or 'loop' for "
                    f"{type(evaluator.model).__name__}."
                )
            return _stacked_points(
                evaluator, params, directions, coefficients, plan.chunk_size, steps
            )
    raise InvalidInputError(f"unknown strategy {plan.strategy!r}.")


def _loop_points(evaluator, params, directions, coefficients) -> NDArray[np.float64]:
    values = np.empty(len(coefficients))
    for i, row in enumerate(coefficients):
        point = {}
        for name, p in params.items():
            moved = p
            for c, d in zip(row, directions, strict=True):
                moved = moved + float(c) * d[name]
            point[name] = moved
        values[i] = evaluator.loss(point)
    return values


def _vmap_points(evaluator, params, directions, coefficients, chunk_size) -> NDArray[np.float64]:
    values: list[float] = []
    for start in range(0, len(coefficients), chunk_size):
        stacked = _stacked_parameters(params, directions, coefficients[start : start + chunk_size])
        values.extend(evaluator.batched_losses(stacked))
    return np.asarray(values, dtype=np.float64)


def _stacked_parameters(params, directions, chunk) -> dict[str, torch.Tensor]:
    """Return every parameter with a leading dimension of one entry per point."""
    import torch

    out = {}
    for name, p in params.items():
        shape = (-1,) + (1,) * p.dim()
        moved = p.unsqueeze(0).expand((len(chunk),) + tuple(p.shape))
        for j, d in enumerate(directions):
            c = torch.as_tensor(chunk[:, j], dtype=p.dtype, device=p.device).reshape(shape)
            moved = moved + c * d[name].unsqueeze(0)
        out[name] = moved
    return out


# ---------------------------------------------------------------------------------------
# The stacked engine
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    kind: Literal["flatten", "linear", "elementwise"]
    module: torch.nn.Module
    weight: str = ""
    bias: str | None = None


def stack_steps(model: torch.nn.Module) -> list[_Step] | None:
    """Return the stacked engine's steps for ``model``, or ``None`` when it does not apply.

    The engine applies to an ``nn.Sequential`` (nested ones included) that keeps
    ``nn.Sequential.forward`` and contains only ``nn.Linear`` layers with the stock forward,
    element-wise modules, and ``nn.Flatten`` before the first linear layer. No module may
    have forward hooks, every floating-point parameter must belong to those linear layers,
    and all parameters must share one dtype.
    """
    from torch import nn

    if _has_global_hooks():
        return None
    if not _is_plain_sequential(model):
        return None
    names = {id(p): name for name, p in model.named_parameters()}
    steps: list[_Step] = []
    covered: set[str] = set()
    for module in _leaves(model):
        if module is None or _has_hooks(module):
            return None
        kind = type(module)
        if kind is nn.Linear and kind.forward is nn.Linear.forward:
            weight = names.get(id(module.weight))
            bias = names.get(id(module.bias)) if module.bias is not None else None
            if weight is None or (module.bias is not None and bias is None):
                return None  # A parametrization or a shared tensor: not a plain layer.
            steps.append(_Step("linear", module, weight, bias))
            covered.update(n for n in (weight, bias) if n is not None)
        elif kind is nn.Flatten and not any(s.kind == "linear" for s in steps):
            steps.append(_Step("flatten", module))
        elif kind.__name__ in _ELEMENTWISE_NAMES and kind.__module__.startswith("torch.nn"):
            steps.append(_Step("elementwise", module))
            covered.update(n for n, _ in _own_parameters(module, names))
        else:
            return None
    float_params = {n for n, p in model.named_parameters() if p.is_floating_point()}
    dtypes = {p.dtype for p in model.parameters()}
    if not any(s.kind == "linear" for s in steps) or covered != float_params:
        return None
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        return None
    if any(s.kind == "elementwise" and any(True for _ in s.module.parameters()) for s in steps):
        return None  # PReLU's slope would need its own per-point stacking.
    return steps


def _stacked_points(
    evaluator, params, directions, coefficients, chunk_size, steps
) -> NDArray[np.float64]:
    import torch

    x = evaluator.probe.inputs
    y = evaluator.probe.targets
    dtype = next(iter(params.values())).dtype
    first = next(i for i, s in enumerate(steps) if s.kind == "linear")
    for step in steps[:first]:
        x = step.module(x)
    head = steps[first]
    # Outputs of the first layer at theta and along each direction, computed once.
    base = torch.nn.functional.linear(
        x, params[head.weight], params[head.bias] if head.bias else None
    )
    along = torch.stack(
        [
            torch.nn.functional.linear(x, d[head.weight], d[head.bias] if head.bias else None)
            for d in directions
        ]
    ).reshape(len(directions), -1)
    layers = {
        id(step): _LayerStack.build(step, params, directions)
        for step in steps[first + 1 :]
        if step.kind == "linear"
    }
    losses = _ChunkLosses(evaluator.loss_fn, y)
    rest = steps[first + 1 :]
    # With fused cross-entropy on (points, examples, features) activations and few classes,
    # a final linear layer writes (points, classes, examples) directly: the layout the
    # loss reads fastest, and a better shape for a batched product with few outputs.
    class_major = (
        losses.fused
        and x.dim() == 2
        and bool(rest)
        and rest[-1].kind == "linear"
        and class_major_pays(rest[-1].module.out_features, x.device)
    )
    for start in range(0, len(coefficients), chunk_size):
        chunk = coefficients[start : start + chunk_size]
        c = torch.as_tensor(chunk, dtype=dtype, device=x.device)
        # One pass over the chunk's first-layer outputs: base + c @ along.
        h = torch.addmm(base.reshape(1, -1), c, along).reshape((len(chunk), *base.shape))
        for step in rest[:-1] if class_major else rest:
            if step.kind == "elementwise":
                h = step.module(h)
            else:
                h = layers[id(step)].apply(h, c)
        if class_major:
            losses.add_class_major(layers[id(rest[-1])].apply_class_major(h, c))
        else:
            losses.add(h)
    return losses.result()


@dataclass(frozen=True)
class _LayerStack:
    """One linear layer's parameters at theta and along every direction, flattened so
    that a chunk's per-point weights are one ``addmm``: ``theta + c @ directions``."""

    weight: torch.Tensor  # (1, out * in)
    weight_along: torch.Tensor  # (k, out * in)
    bias: torch.Tensor | None  # (1, out)
    bias_along: torch.Tensor | None  # (k, out)
    shape: tuple[int, int]

    @classmethod
    def build(cls, step: _Step, params, directions) -> _LayerStack:
        import torch

        weight = params[step.weight]
        bias = params[step.bias] if step.bias is not None else None
        return cls(
            weight=weight.reshape(1, -1),
            weight_along=torch.stack([d[step.weight].reshape(-1) for d in directions]),
            bias=None if bias is None else bias.reshape(1, -1),
            bias_along=(
                None
                if step.bias is None
                else torch.stack([d[step.bias].reshape(-1) for d in directions])
            ),
            shape=(weight.shape[0], weight.shape[1]),
        )

    def apply(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Return ``h[i] @ W_i^T + b_i`` for ``h`` of shape ``(points, ..., in_features)``."""
        import torch

        k = c.shape[0]
        weight = torch.addmm(self.weight, c, self.weight_along).reshape(k, *self.shape)
        if self.bias is None or self.bias_along is None:
            bias = torch.zeros(k, 1, self.shape[0], dtype=h.dtype, device=h.device)
        else:
            bias = torch.addmm(self.bias, c, self.bias_along).unsqueeze(1)
        middle = h.shape[1:-1]
        flat = h.reshape(k, -1, h.shape[-1])
        out = torch.baddbmm(bias.to(flat.dtype), flat, weight.transpose(1, 2).to(flat.dtype))
        return out.reshape((k, *middle, out.shape[-1]))

    def apply_class_major(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Return :meth:`apply`'s result for ``h`` of shape ``(points, examples, in)`` as
        ``(points, out, examples)``: ``W_i @ h[i]^T + b_i``."""
        import torch

        k = c.shape[0]
        weight = torch.addmm(self.weight, c, self.weight_along).reshape(k, *self.shape)
        if self.bias is None or self.bias_along is None:
            bias = torch.zeros(k, self.shape[0], 1, dtype=h.dtype, device=h.device)
        else:
            bias = torch.addmm(self.bias, c, self.bias_along).unsqueeze(2)
        return torch.baddbmm(bias.to(h.dtype), weight.to(h.dtype), h.transpose(1, 2))


class _ChunkLosses:
    """Per-point losses of stacked outputs of shape ``(points, examples, ...)``.

    ``torch.nn.functional.cross_entropy`` (or a default ``nn.CrossEntropyLoss``) with class
    index targets is computed for the whole chunk at once, with few classes on the middle
    axis (see :func:`class_major_pays`). Any other loss is vmapped over the points. A loss
    that vmap cannot trace, because it reads values with ``.item()`` or branches on them,
    is called point by point from the chunk where tracing failed. Each point's loss depends on
    that point's outputs alone, and values stay on the device until :meth:`result`, so
    chunks run without a host synchronisation each.
    """

    def __init__(self, loss_fn, targets: torch.Tensor) -> None:
        self.loss_fn = loss_fn
        self.targets = targets
        self.fused = is_plain_cross_entropy(loss_fn) and are_class_indices(targets)
        self.vmapped: bool | None = None
        self.parts: list[torch.Tensor] = []

    def add(self, outputs: torch.Tensor) -> None:
        import torch

        if self.fused and outputs.dim() == 3:
            points, examples, classes = outputs.shape
            if class_major_pays(classes, outputs.device):
                self.add_class_major(outputs.transpose(1, 2))
                return
            per_example = torch.nn.functional.cross_entropy(
                outputs.reshape(points * examples, classes),
                self.targets.repeat(points),
                reduction="none",
            )
            self.parts.append(per_example.reshape(points, examples).mean(1))
            return
        if self.vmapped is not False:
            try:
                batched = torch.func.vmap(self.loss_fn, in_dims=(0, None))(outputs, self.targets)
            except Exception:  # noqa: BLE001 - any tracing failure means "not vmappable".
                # The plain calls below raise the loss function's own error, if it has one.
                self.vmapped = False
            else:
                if batched.shape == (outputs.shape[0],):
                    self.vmapped = True
                    self.parts.append(batched.detach())
                    return
                self.vmapped = False  # Not a scalar per point; use the plain calls.
        self.parts.append(
            torch.stack([self.loss_fn(row, self.targets).detach().reshape(()) for row in outputs])
        )

    def add_class_major(self, outputs: torch.Tensor) -> None:
        """Add fused cross-entropy losses of outputs of shape ``(points, classes, examples)``."""
        import torch

        points, _, examples = outputs.shape
        per_example = torch.nn.functional.cross_entropy(
            outputs, self.targets.reshape(1, examples).expand(points, examples), reduction="none"
        )
        self.parts.append(per_example.mean(1))

    def result(self) -> NDArray[np.float64]:
        import torch

        if not self.parts:
            return np.empty(0, dtype=np.float64)
        return torch.cat(self.parts).to("cpu", torch.float64).numpy()


def _leaves(model: torch.nn.Module) -> Iterator[torch.nn.Module | None]:
    """Yield the modules a plain ``nn.Sequential`` runs, in order; ``None`` marks a nested
    container the stacked engine cannot follow."""
    for module in model.children():
        if _is_sequential_type(module):
            if not _is_plain_sequential(module) or _has_hooks(module):
                yield None
                return
            yield from _leaves(module)
        else:
            yield module


def _is_sequential_type(module: torch.nn.Module) -> bool:
    from torch import nn

    return isinstance(module, nn.Sequential)


def _is_plain_sequential(module: torch.nn.Module) -> bool:
    from torch import nn

    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _has_hooks(module: torch.nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or getattr(module, "_forward_hooks_with_kwargs", None)
    )


def _has_global_hooks() -> bool:
    from torch.nn.modules import module as module_impl

    return bool(
        getattr(module_impl, "_global_forward_hooks", None)
        or getattr(module_impl, "_global_forward_pre_hooks", None)
    )


def _own_parameters(module, names) -> Iterator[tuple[str, torch.Tensor]]:
    for p in module.parameters():
        name = names.get(id(p))
        if name is not None:
            yield name, p


# ---------------------------------------------------------------------------------------
# Memory estimate
# ---------------------------------------------------------------------------------------


def _bytes_per_point(evaluator: ParameterEvaluator) -> int:
    """Estimate the memory of one point in a batched call: its parameters plus the outputs
    of every leaf module for the whole probe set, measured on one example."""
    import torch

    model = evaluator.model
    n_params = sum(p.numel() for p in model.parameters() if p.is_floating_point())
    element = max((p.element_size() for p in model.parameters()), default=4)
    activations = [0]

    def count(_module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            activations[0] += output.numel()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    with _hooked(leaves, count), torch.no_grad():
        try:
            model(evaluator.probe.inputs[:1])
        except RuntimeError:
            # Some models reject a batch of one example. They get a conservative estimate
            # of eight activations per input value.
            activations[0] = 8 * evaluator.probe.inputs[:1].numel()
    per_example = max(activations[0], 1)
    return int(element * (n_params + per_example * len(evaluator.probe)))


@contextmanager
def _hooked(modules, hook) -> Iterator[None]:
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
