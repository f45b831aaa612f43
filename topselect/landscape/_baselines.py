"""Sharpness baselines on the probe set: Hessian trace, top Hessian eigenvalue, SAM sharpness.

These are the curvature measures a user would otherwise compare models by. Each one is
computed on the same probe set, loss function and parameters as the landscape slice (see
:func:`topselect.landscape.probe_landscape`), so its value and its cost can be set beside
the persistence scores. The loss is the probe-set mean

    L(theta) = sum over batches b of (n_b / n) * loss_fn(model(x_b; theta), y_b),

over every floating-point parameter of the model (frozen ones included, as in the
landscape), with every submodule in eval mode. Curvature comes from exact Hessian-vector
products by double backpropagation through ``torch.func.functional_call`` on detached
copies of the parameters, so the model's parameters, buffers, ``.grad`` fields and
train/eval modes are left as they were.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from topselect.exceptions import InvalidInputError
from topselect.landscape._evaluate import (
    LossFn,
    ParameterEvaluator,
    eval_mode,
    parameters_of,
    unflatten_parameters,
)

if TYPE_CHECKING:
    import torch

    from topselect.landscape._probe_set import ProbeSet

__all__ = ["BaselineResult", "hessian_trace", "sam_sharpness", "top_hessian_eigenvalue"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaselineResult:
    """One sharpness baseline: its value, its cost and how it was obtained.

    Attributes:
        value: The baseline in loss units per squared parameter unit for the Hessian
            measures, and in loss units for SAM sharpness. NaN or inf when the loss or its
            derivatives are not finite at the model's parameters.
        seconds: Wall time of the whole computation, argument checks excluded.
        details: Plain ``float``, ``int`` and ``bool`` values that each function documents,
            ready for ``json.dumps``, Optuna trial attributes and MLflow metrics. Float
            entries are NaN or inf only where ``value`` is.
        probe_fingerprint: Fingerprint of the probe set the baseline was measured on.
    """

    value: float
    seconds: float
    details: dict[str, float | int | bool]
    probe_fingerprint: str


def hessian_trace(
    model: torch.nn.Module,
    loss_fn: LossFn,
    probe: ProbeSet,
    *,
    n_samples: int = 32,
    seed: int = 0,
    batch_size: int | None = None,
) -> BaselineResult:
    """Estimate the trace of the probe-set loss Hessian with Hutchinson's estimator.

    For Rademacher vectors ``v`` (entries +1 or -1 with equal probability),
    ``E[v^T H v] = trace(H)``. The estimate is the mean of ``v_i^T H v_i`` over
    ``n_samples`` draws, and its standard error is the sample standard deviation (with
    Bessel's correction) divided by ``sqrt(n_samples)``. The vectors are drawn on the CPU
    in float32 from ``seed``, so the same seed gives the same vectors on every device.
    Each ``H v`` is an exact Hessian-vector product, computed batch by batch and weighted
    by the batch's share of the probe set, so ``batch_size`` changes the memory use and
    not the value beyond rounding.

    Args:
        model: Network to measure; it is evaluated on its own device in eval mode.
        loss_fn: ``loss_fn(outputs, targets)`` giving the mean loss as a scalar tensor.
        probe: Probe set (see :func:`topselect.landscape.make_probe_set`).
        n_samples: Number of Rademacher vectors, >= 2 so the standard error is defined.
            Each one costs one Hessian-vector product over the probe set.
        seed: Seed of the Rademacher vectors.
        batch_size: Probe examples per forward pass; ``None`` uses the whole probe set.

    Returns:
        ``value`` is the trace estimate. ``details`` contains ``standard_error`` (same unit),
        ``n_samples``, ``n_parameters`` (length of ``v``) and ``probe_size``.

    Raises:
        InvalidInputError: For ``n_samples < 2``, ``batch_size < 1``, or a model without
            floating-point parameters.
    """
    _check_integer("n_samples", n_samples, 2, "so that the standard error is defined")
    _check_batch_size(batch_size)
    objective = _ProbeObjective(model, loss_fn, probe, batch_size)

    started = time.perf_counter()
    with eval_mode(model):
        samples = _hutchinson_samples(objective, n_samples, seed)
    mean = float(samples.mean())
    standard_error = float(samples.std(unbiased=True)) / math.sqrt(n_samples)
    seconds = time.perf_counter() - started

    _warn_if_not_finite("Hessian trace", mean)
    _logger.debug(
        "Hessian trace %.6g (standard error %.2g, %d samples) in %.2f s.",
        mean,
        standard_error,
        n_samples,
        seconds,
    )
    details: dict[str, float | int | bool] = {
        "standard_error": standard_error,
        "n_samples": n_samples,
        **objective.sizes(),
    }
    return BaselineResult(mean, seconds, details, probe.fingerprint)


def top_hessian_eigenvalue(
    model: torch.nn.Module,
    loss_fn: LossFn,
    probe: ProbeSet,
    *,
    n_iterations: int = 50,
    tol: float = 1e-4,
    seed: int = 0,
    batch_size: int | None = None,
) -> BaselineResult:
    """Estimate the largest-magnitude eigenvalue of the probe-set loss Hessian.

    Power iteration from a unit Gaussian start vector drawn on the CPU in float32 from
    ``seed``: each iteration computes ``w = H v``, takes the Rayleigh quotient
    ``lambda = v^T w`` as the estimate and continues from ``v = w / ||w||``. It stops
    when two successive estimates satisfy ``|lambda_k - lambda_(k-1)| <= tol * |lambda_k|``
    or after ``n_iterations`` products.

    Power iteration converges to the eigenvalue of largest absolute value. Away from a
    minimum the Hessian can have a negative eigenvalue larger in magnitude than every
    positive one, and then the result is that negative eigenvalue, not the largest
    eigenvalue. Convergence is geometric in the ratio of the two largest magnitudes, so a
    small spectral gap needs more iterations. ``details["converged"]`` is true when the
    tolerance was met, and a warning is logged when it was not.

    Args:
        model: Network to measure; it is evaluated on its own device in eval mode.
        loss_fn: ``loss_fn(outputs, targets)`` giving the mean loss as a scalar tensor.
        probe: Probe set (see :func:`topselect.landscape.make_probe_set`).
        n_iterations: Maximum number of Hessian-vector products, >= 2 because convergence
            is judged on two successive estimates.
        tol: Relative change between successive estimates at which to stop (>= 0; 0 runs
            every iteration unless two estimates are equal).
        seed: Seed of the start vector.
        batch_size: Probe examples per forward pass; ``None`` uses the whole probe set.
            With one batch its gradient graph is built once and reused by every product;
            with several, each product repeats the forward and backward passes.

    Returns:
        ``value`` is the last Rayleigh quotient. ``details`` contains ``iterations``
        (products computed), ``converged``, ``relative_change`` (between the last two estimates),
        ``n_parameters`` and ``probe_size``.

    Raises:
        InvalidInputError: For ``n_iterations < 2``, a negative or non-finite ``tol``,
            ``batch_size < 1``, or a model without floating-point parameters.
    """
    _check_integer("n_iterations", n_iterations, 2, "because convergence compares two estimates")
    _check_nonnegative("tol", tol)
    _check_batch_size(batch_size)
    objective = _ProbeObjective(model, loss_fn, probe, batch_size)

    started = time.perf_counter()
    with eval_mode(model):
        iteration = _power_iteration(objective, n_iterations, tol, seed)
    seconds = time.perf_counter() - started

    eigenvalue, iterations, converged, relative_change = iteration
    _warn_if_not_finite("Top Hessian eigenvalue", eigenvalue)
    if not converged and math.isfinite(eigenvalue):
        _logger.warning(
            "Power iteration did not converge in %d iterations (relative change %.2g > "
            "tol %.2g); the top Hessian eigenvalue %.6g is an underestimate of its "
            "magnitude. Raise n_iterations or tol.",
            iterations,
            relative_change,
            tol,
            eigenvalue,
        )
    _logger.debug(
        "Top Hessian eigenvalue %.6g after %d iterations in %.2f s.",
        eigenvalue,
        iterations,
        seconds,
    )
    details: dict[str, float | int | bool] = {
        "iterations": iterations,
        "converged": converged,
        "relative_change": relative_change,
        **objective.sizes(),
    }
    return BaselineResult(eigenvalue, seconds, details, probe.fingerprint)


def sam_sharpness(
    model: torch.nn.Module,
    loss_fn: LossFn,
    probe: ProbeSet,
    *,
    rho: float = 0.05,
    adaptive: bool = True,
    eps: float = 1e-12,
    batch_size: int | None = None,
) -> BaselineResult:
    """Measure the loss increase after one sharpness-aware ascent step of radius ``rho``.

    The sharpness is ``L(theta + e) - L(theta)`` for the first-order solution ``e`` of
    ``max L(theta + e)`` subject to ``||T^-1 e|| <= rho``, with ``g`` the gradient of
    ``L`` at ``theta``:

    - adaptive (ASAM, Kwon et al., 2021, arXiv:2102.11600): ``T = diag(|theta|)`` over
      all parameters, and ``e = rho * T^2 g / (||T g|| + eps)``. Multiplying the weights
      and bias of a ReLU layer by ``a > 0`` and the next layer's weights by ``1 / a``
      leaves this value unchanged, because ``e`` scales with the parameters.
    - plain (SAM): ``T = I``, and ``e = rho * g / (||g|| + eps)``.

    The reference ASAM code (SamsungLabs/ASAM, ``asam.py``) uses ``|theta| + eta`` with
    ``eta = 0.01`` for tensors whose name contains ``weight`` and ``T = I`` for the rest.
    Here ``T = |theta|`` for every tensor, so entries that are exactly zero (such as
    biases initialized to zero) are not perturbed. The step has ``||T^-1 e|| = rho`` up
    to ``eps`` with ``adaptive=True`` and ``||e|| = rho`` with ``adaptive=False``. So
    ``rho`` is relative to the parameters' magnitudes for ASAM and in parameter units for
    SAM, and the usual radii differ (the reference ASAM code defaults to ``rho = 0.5``).

    Both losses are probe-set means evaluated without gradients, and ``g`` is the exact
    gradient of the probe-set mean, computed batch by batch. At a stationary point
    (``g = 0``) the step is zero and so is the sharpness.

    Args:
        model: Network to measure; it is evaluated on its own device in eval mode.
        loss_fn: ``loss_fn(outputs, targets)`` giving the mean loss as a scalar tensor.
        probe: Probe set (see :func:`topselect.landscape.make_probe_set`).
        rho: Radius of the ascent step, finite and > 0.
        adaptive: ASAM's scaling ``T = |theta|`` when true, plain SAM when false.
        eps: Added to the gradient norm in the step's denominator (finite and >= 0).
        batch_size: Probe examples per forward pass; ``None`` uses the whole probe set.

    Returns:
        ``value`` is the sharpness in loss units. ``details`` contains ``loss`` and
        ``perturbed_loss`` (``L(theta)`` and ``L(theta + e)``), ``gradient_norm``
        (``||g||``), ``scaled_gradient_norm`` (``||T g||``), ``perturbation_norm``
        (``||e||`` in parameter units), ``rho``, ``adaptive``, ``n_parameters`` and
        ``probe_size``.

    Raises:
        InvalidInputError: For a ``rho`` that is not finite and > 0, a negative or
            non-finite ``eps``, ``batch_size < 1``, or a model without floating-point
            parameters.
    """
    _check_positive("rho", rho)
    _check_nonnegative("eps", eps)
    _check_batch_size(batch_size)
    objective = _ProbeObjective(model, loss_fn, probe, batch_size)

    started = time.perf_counter()
    with eval_mode(model):
        details = _sam_step(objective, rho, adaptive, eps)
    sharpness = float(details["perturbed_loss"]) - float(details["loss"])
    seconds = time.perf_counter() - started

    _warn_if_not_finite("SAM sharpness", sharpness)
    _logger.debug(
        "%s sharpness %.6g at rho %.3g in %.2f s.",
        "ASAM" if adaptive else "SAM",
        sharpness,
        rho,
        seconds,
    )
    details.update(rho=float(rho), adaptive=bool(adaptive), **objective.sizes())
    return BaselineResult(sharpness, seconds, details, probe.fingerprint)


# ---------------------------------------------------------------------------------------
# The probe-set loss as a function of the parameters
# ---------------------------------------------------------------------------------------


class _ProbeObjective:
    """The mean probe-set loss of a model as a differentiable function of its parameters.

    Gradients are taken with respect to fresh leaf tensors that share storage with the
    model's parameters but are detached from them, so autograd never writes ``.grad`` of
    the model's parameters and nothing writes their values.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        probe: ProbeSet,
        batch_size: int | None,
    ) -> None:
        self.theta = parameters_of(model)
        if not self.theta:
            raise InvalidInputError("model has no floating-point parameters to measure.")
        self.evaluator = ParameterEvaluator(model, loss_fn, probe, batch_size)
        self.n_parameters = sum(p.numel() for p in self.theta.values())
        self._cached_graphs: list[_BatchGraph] | None = None

    def sizes(self) -> dict[str, float | int | bool]:
        return {"n_parameters": self.n_parameters, "probe_size": len(self.evaluator.probe)}

    def loss(self, params: Mapping[str, torch.Tensor]) -> float:
        return self.evaluator.loss(params)

    def batch_graphs(self, create_graph: bool = True) -> Iterator[_BatchGraph]:
        """Yield each batch's weight ``n_b / n``, its leaf parameters and loss gradient."""
        import torch
        from torch.func import functional_call

        evaluator = self.evaluator
        n = len(evaluator.probe)
        for start in range(0, n, evaluator.batch_size):
            x = evaluator.probe.inputs[start : start + evaluator.batch_size]
            y = evaluator.probe.targets[start : start + evaluator.batch_size]
            leaves = {name: p.detach().requires_grad_(True) for name, p in self.theta.items()}
            inputs = list(leaves.values())
            with torch.enable_grad():
                outputs = functional_call(evaluator.model, {**evaluator.buffers, **leaves}, (x,))
                loss = evaluator.loss_fn(outputs, y)
                gradient = torch.autograd.grad(
                    loss, inputs, create_graph=create_graph, allow_unused=True
                )
            yield _BatchGraph(len(x) / n, inputs, _zeros_for_none(gradient, inputs))

    def gradient(self) -> list[torch.Tensor]:
        """Return the gradient of the probe-set mean loss, one tensor per parameter."""
        total: list[torch.Tensor] | None = None
        for batch in self.batch_graphs(create_graph=False):
            total = _add_scaled(total, batch.weight, [g.detach() for g in batch.gradient])
        assert total is not None  # The probe set contains at least one example.
        return total

    def hessian_vector_product(self, vector: list[torch.Tensor]) -> list[torch.Tensor]:
        """Return ``H v`` for the probe-set mean loss, one tensor per parameter."""
        total: list[torch.Tensor] | None = None
        for batch in self._reusable_graphs():
            total = _add_scaled(total, batch.weight, batch.hessian_vector_product(vector))
        assert total is not None
        return total

    def _reusable_graphs(self) -> list[_BatchGraph] | Iterator[_BatchGraph]:
        # A single batch's graph is kept for every product. Several batches are rebuilt
        # for each product, so that memory stays at one batch's graph.
        if self._cached_graphs is not None:
            return self._cached_graphs
        if self.evaluator.batch_size >= len(self.evaluator.probe):
            self._cached_graphs = list(self.batch_graphs())
            return self._cached_graphs
        return self.batch_graphs()


@dataclass(frozen=True)
class _BatchGraph:
    """One probe batch: its share ``n_b / n`` of the probe set, leaves and loss gradient."""

    weight: float
    leaves: list[torch.Tensor]
    gradient: list[torch.Tensor]

    def hessian_vector_product(self, vector: list[torch.Tensor]) -> list[torch.Tensor]:
        """Return this batch's ``H_b v`` by differentiating ``g_b . v`` once more."""
        import torch

        with torch.enable_grad():
            projection = _dot(self.gradient, vector)
        if not projection.requires_grad:  # A constant gradient means a linear loss.
            return [torch.zeros_like(v) for v in vector]
        product = torch.autograd.grad(
            projection, self.leaves, retain_graph=True, allow_unused=True
        )
        return _zeros_for_none(product, self.leaves)


# ---------------------------------------------------------------------------------------
# The three estimators
# ---------------------------------------------------------------------------------------


def _hutchinson_samples(objective: _ProbeObjective, n_samples: int, seed: int) -> torch.Tensor:
    """Return ``v_i^T H v_i`` for ``n_samples`` seeded Rademacher vectors, in float64."""
    import torch

    # The batch loop encloses the sample loop, so each batch's graph is built once.
    # Restarting the generator for every batch draws the same vectors again.
    totals = [0.0] * n_samples
    for batch in objective.batch_graphs():
        generator = torch.Generator().manual_seed(seed)
        for i in range(n_samples):
            vector = _rademacher(objective.theta, generator)
            product = batch.hessian_vector_product(vector)
            totals[i] += batch.weight * float(_dot(vector, product))
    return torch.tensor(totals, dtype=torch.float64)


def _power_iteration(
    objective: _ProbeObjective, n_iterations: int, tol: float, seed: int
) -> tuple[float, int, bool, float]:
    """Return the estimate, the iterations run, convergence and the last relative change."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(objective.n_parameters, generator=generator, dtype=torch.float32)
    vector = list(unflatten_parameters(start / start.norm(), objective.theta).values())

    previous = math.nan
    relative_change = math.inf
    for iteration in range(1, n_iterations + 1):
        product = objective.hessian_vector_product(vector)
        eigenvalue = float(_dot(vector, product))
        norm = float(_norm(product))
        if not (math.isfinite(eigenvalue) and math.isfinite(norm)):
            return math.nan, iteration, False, math.nan
        if norm == 0.0:
            # NOTE: H v = 0 for a random start almost surely means H = 0, but a start vector
            # orthogonal to every eigenvector of a nonzero eigenvalue also gives 0 here.
            return 0.0, iteration, True, 0.0
        if iteration > 1:
            relative_change = abs(eigenvalue - previous) / abs(eigenvalue)
            if abs(eigenvalue - previous) <= tol * abs(eigenvalue):
                return eigenvalue, iteration, True, relative_change
        previous = eigenvalue
        vector = [t / norm for t in product]
    return eigenvalue, n_iterations, False, relative_change


def _sam_step(
    objective: _ProbeObjective, rho: float, adaptive: bool, eps: float
) -> dict[str, float | int | bool]:
    """Return the losses before and after one ascent step and the norms of the step."""
    theta = list(objective.theta.values())
    gradient = objective.gradient()
    if adaptive:
        scale = [p.abs() for p in theta]
        scaled_gradient = [s * g for s, g in zip(scale, gradient, strict=True)]
        scaled_norm = float(_norm(scaled_gradient))
        factor = rho / (scaled_norm + eps) if scaled_norm > 0.0 else 0.0
        step = [factor * s * sg for s, sg in zip(scale, scaled_gradient, strict=True)]
    else:
        scaled_norm = float(_norm(gradient))
        factor = rho / (scaled_norm + eps) if scaled_norm > 0.0 else 0.0
        step = [factor * g for g in gradient]

    perturbed = {name: p + e for (name, p), e in zip(objective.theta.items(), step, strict=True)}
    return {
        "loss": objective.loss(objective.theta),
        "perturbed_loss": objective.loss(perturbed),
        "gradient_norm": float(_norm(gradient)),
        "scaled_gradient_norm": scaled_norm,
        "perturbation_norm": float(_norm(step)),
    }


# ---------------------------------------------------------------------------------------
# Vector helpers: a vector is a list of tensors shaped like the parameters
# ---------------------------------------------------------------------------------------


def _dot(first: list[torch.Tensor], second: list[torch.Tensor]) -> torch.Tensor:
    terms = [(a * b).sum() for a, b in zip(first, second, strict=True)]
    total = terms[0]
    for term in terms[1:]:
        total = total + term  # Promotes mixed dtypes, unlike torch.stack.
    return total


def _add_scaled(
    total: list[torch.Tensor] | None, weight: float, vector: list[torch.Tensor]
) -> list[torch.Tensor]:
    scaled = [weight * t for t in vector]
    if total is None:
        return scaled
    return [t + s for t, s in zip(total, scaled, strict=True)]


def _norm(vector: list[torch.Tensor]) -> torch.Tensor:
    return _dot(vector, vector).sqrt()


def _rademacher(
    reference: Mapping[str, torch.Tensor], generator: torch.Generator
) -> list[torch.Tensor]:
    import torch

    total = sum(p.numel() for p in reference.values())
    signs = torch.randint(0, 2, (total,), generator=generator, dtype=torch.float32) * 2 - 1
    return list(unflatten_parameters(signs, reference).values())


def _zeros_for_none(
    tensors: tuple[torch.Tensor | None, ...], inputs: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Replace the ``None`` that autograd returns for an unused input by zeros."""
    import torch

    return [
        torch.zeros_like(ref) if t is None else t for t, ref in zip(tensors, inputs, strict=True)
    ]


# ---------------------------------------------------------------------------------------
# Argument checks and warnings
# ---------------------------------------------------------------------------------------


def _check_integer(name: str, value: object, minimum: int, reason: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidInputError(
            f"{name} must be an integer >= {minimum} {reason}, but got {value!r}. "
            f"Pass {name}={minimum} or more."
        )


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{name} must be a finite number > 0, but got {value!r}.")


def _check_nonnegative(name: str, value: float) -> None:
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
        raise InvalidInputError(f"{name} must be a finite number >= 0, but got {value!r}.")


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is None:
        return
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise InvalidInputError(
            f"batch_size must be None (the whole probe set at once) or an integer >= 1, "
            f"but got {batch_size!r}."
        )


def _warn_if_not_finite(label: str, value: float) -> None:
    if not math.isfinite(value):
        _logger.warning(
            "%s is %s because the probe-set loss or its derivatives are not finite at the "
            "model's parameters; check the model for diverged weights.",
            label,
            value,
        )
