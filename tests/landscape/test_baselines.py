"""Tests of the sharpness baselines: values against closed forms on a quadratic loss, the
model left untouched, seeding, argument checks and JSON-safe results.

The quadratic problem is a linear model ``y = W x + b`` with ``m`` outputs under
``F.mse_loss`` (mean over ``n * m`` entries). With ``X1 = [X, 1]`` of shape ``(n, d + 1)``,
the loss is exactly quadratic in ``(W, b)`` and its Hessian is block diagonal, one block
``B = 2 / (n m) X1^T X1`` per output row. So ``trace(H) = m trace(B)``, the eigenvalues of
``H`` are those of ``B`` with multiplicity ``m``, and ``e^T H e = 2 / (n m) ||X e_W^T +
e_b||^2`` for a step ``e = (e_W, e_b)``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import topselect
from topselect.landscape import (
    BaselineResult,
    hessian_trace,
    sam_sharpness,
    top_hessian_eigenvalue,
)

N_EXAMPLES = 60
N_FEATURES = 4
N_OUTPUTS = 2
# Column scales of the quadratic problem's inputs. They separate the top eigenvalue of
# the Hessian from the next one, so power iteration converges in a few iterations.
FEATURE_SCALES = (3.0, 1.0, 0.7, 0.4)

BASELINES: dict[str, Callable[..., BaselineResult]] = {
    "trace": hessian_trace,
    "eigenvalue": top_hessian_eigenvalue,
    "sam": sam_sharpness,
}
# Small settings so that every call takes milliseconds.
FAST_SETTINGS: dict[str, dict] = {
    "trace": {"n_samples": 4},
    "eigenvalue": {"n_iterations": 5},
    "sam": {},
}


# ---------------------------------------------------------------------------------------
# The quadratic problem and its closed forms
# ---------------------------------------------------------------------------------------


class Quadratic:
    """A float64 linear model under MSE loss, with its exact gradient and Hessian."""

    def __init__(self, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        scales = torch.tensor(FEATURE_SCALES, dtype=torch.float64)
        self.inputs = torch.randn(N_EXAMPLES, N_FEATURES, generator=generator).double() * scales
        self.targets = torch.randn(N_EXAMPLES, N_OUTPUTS, generator=generator).double()
        torch.manual_seed(seed)
        self.model = nn.Linear(N_FEATURES, N_OUTPUTS).double()
        self.probe = topselect.make_probe_set(self.inputs, self.targets, size=N_EXAMPLES)
        self.factor = 2.0 / (N_EXAMPLES * N_OUTPUTS)

    def hessian_block(self) -> torch.Tensor:
        """Return ``B = 2 / (n m) X1^T X1``, shape ``(d + 1, d + 1)``."""
        ones = torch.ones(N_EXAMPLES, 1, dtype=torch.float64)
        augmented = torch.cat([self.inputs, ones], dim=1)
        return self.factor * augmented.T @ augmented

    def trace(self) -> float:
        return N_OUTPUTS * float(self.hessian_block().trace())

    def top_eigenvalue(self) -> float:
        return float(torch.linalg.eigvalsh(self.hessian_block())[-1])

    def gradient(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the gradient ``(g_W, g_b)`` of the mean squared error."""
        weight, bias = self.model.weight.detach(), self.model.bias.detach()
        residual = self.inputs @ weight.T + bias - self.targets
        return self.factor * residual.T @ self.inputs, self.factor * residual.sum(dim=0)

    def curvature(self, step: tuple[torch.Tensor, torch.Tensor]) -> float:
        """Return ``e^T H e`` for a step ``e = (e_W, e_b)``."""
        outputs = self.inputs @ step[0].T + step[1]
        return self.factor * float((outputs**2).sum())

    def loss_increase(self, step: tuple[torch.Tensor, torch.Tensor]) -> float:
        """Return ``L(theta + e) - L(theta) = g^T e + e^T H e / 2``, exact for a quadratic."""
        gradient = self.gradient()
        linear = float((gradient[0] * step[0]).sum() + (gradient[1] * step[1]).sum())
        return linear + 0.5 * self.curvature(step)


def _norm(pair: tuple[torch.Tensor, torch.Tensor]) -> float:
    return math.sqrt(float((pair[0] ** 2).sum() + (pair[1] ** 2).sum()))


# ---------------------------------------------------------------------------------------
# A network with BatchNorm and Dropout, for the tests that the model is left untouched
# ---------------------------------------------------------------------------------------


def _classification_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(96, 6, generator=generator)
    targets = torch.randint(0, 3, (96,), generator=generator)
    return inputs, targets


def _model_with_batchnorm() -> nn.Sequential:
    """Return an MLP with BatchNorm1d and Dropout whose running statistics are not defaults."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 12),
        nn.BatchNorm1d(12),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(12, 3),
    )
    inputs, _ = _classification_data()
    model.train()
    with torch.no_grad():
        for start in range(0, len(inputs), 32):
            model(inputs[start : start + 32])
    return model


def _classification_probe() -> topselect.ProbeSet:
    inputs, targets = _classification_data()
    return topselect.make_probe_set(inputs, targets, size=48, seed=0)


def _set_modes(model: nn.Sequential, mode: str) -> None:
    if mode == "train":
        model.train()
    elif mode == "eval":
        model.eval()
    else:  # Mixed: the container and Dropout in train mode, BatchNorm in eval mode.
        model.train()
        model[1].eval()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return clones of every parameter and buffer, by name."""
    state = {f"param:{n}": p.detach().clone() for n, p in model.named_parameters()}
    state.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return state


def _run(name: str, model: nn.Module, probe: topselect.ProbeSet, **kwargs) -> BaselineResult:
    settings = {**FAST_SETTINGS[name], **kwargs}
    return BASELINES[name](model, F.cross_entropy, probe, **settings)


# ---------------------------------------------------------------------------------------
# Values against closed forms
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 7])
def test_hessian_trace_matches_exact_trace(batch_size):
    problem = Quadratic()

    result = hessian_trace(problem.model, F.mse_loss, problem.probe, batch_size=batch_size)

    standard_error = result.details["standard_error"]
    assert standard_error > 0
    assert abs(result.value - problem.trace()) <= 4 * standard_error
    assert result.details["n_samples"] == 32


def test_hessian_trace_batches_agree():
    problem = Quadratic()

    whole = hessian_trace(problem.model, F.mse_loss, problem.probe, n_samples=8)
    batched = hessian_trace(problem.model, F.mse_loss, problem.probe, n_samples=8, batch_size=7)

    assert batched.value == pytest.approx(whole.value, rel=1e-10)


def test_hessian_trace_diagonal_hessian_exact():
    # One input feature and no bias: H = c I with c = 2 / (n m) sum x^2, so every Rademacher
    # sample v^T H v = c ||v||^2 equals the trace and the standard error is zero.
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(N_EXAMPLES, 1, generator=generator, dtype=torch.float64)
    targets = torch.randn(N_EXAMPLES, N_OUTPUTS, generator=generator, dtype=torch.float64)
    model = nn.Linear(1, N_OUTPUTS, bias=False).double()
    probe = topselect.make_probe_set(inputs, targets)
    expected = N_OUTPUTS * 2.0 / (N_EXAMPLES * N_OUTPUTS) * float((inputs**2).sum())

    result = hessian_trace(model, F.mse_loss, probe, n_samples=3)

    assert result.value == pytest.approx(expected, rel=1e-12)
    assert result.details["standard_error"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("batch_size", [None, 7])
def test_top_hessian_eigenvalue_matches_eigvalsh(batch_size):
    problem = Quadratic()

    result = top_hessian_eigenvalue(
        problem.model, F.mse_loss, problem.probe, batch_size=batch_size
    )

    assert result.details["converged"] is True
    assert result.details["iterations"] < 50
    assert result.details["relative_change"] <= 1e-4
    assert result.value == pytest.approx(problem.top_eigenvalue(), rel=1e-3)


def test_top_hessian_eigenvalue_largest_magnitude_negative():
    # For the negated loss every eigenvalue is negative, and power iteration returns the
    # one of largest magnitude, not the largest.
    problem = Quadratic()

    def negated_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -F.mse_loss(outputs, targets)

    result = top_hessian_eigenvalue(problem.model, negated_mse, problem.probe)

    assert result.details["converged"] is True
    assert result.value == pytest.approx(-problem.top_eigenvalue(), rel=1e-3)


def test_top_hessian_eigenvalue_unconverged_warns(caplog):
    problem = Quadratic()

    with caplog.at_level(logging.WARNING, logger="topselect.landscape"):
        result = top_hessian_eigenvalue(
            problem.model, F.mse_loss, problem.probe, n_iterations=2, tol=0.0
        )

    assert result.details["converged"] is False
    assert result.details["iterations"] == 2
    assert result.details["relative_change"] > 0
    assert "did not converge in 2 iterations" in caplog.text


def test_sam_sharpness_plain_matches_closed_form():
    # For L = theta^T A theta / 2 + c^T theta + const with gradient g, the SAM step is
    # e = rho g / ||g|| and L(theta + e) - L(theta) = rho ||g|| + rho^2 g^T A g / (2 ||g||^2).
    problem = Quadratic()
    rho = 0.05
    gradient = problem.gradient()
    gradient_norm = _norm(gradient)
    expected = rho * gradient_norm + rho**2 * problem.curvature(gradient) / (2 * gradient_norm**2)

    result = sam_sharpness(problem.model, F.mse_loss, problem.probe, rho=rho, adaptive=False)

    assert result.value == pytest.approx(expected, rel=1e-5)
    assert result.details["gradient_norm"] == pytest.approx(gradient_norm, rel=1e-10)
    assert result.details["perturbation_norm"] == pytest.approx(rho, rel=1e-10)
    assert result.details["adaptive"] is False


def test_sam_sharpness_adaptive_matches_closed_form():
    # ASAM's step is e = rho T^2 g / ||T g|| with T = |theta| elementwise.
    problem = Quadratic()
    rho = 0.05
    weight, bias = problem.model.weight.detach(), problem.model.bias.detach()
    scale = (weight.abs(), bias.abs())
    gradient = problem.gradient()
    scaled_gradient = (scale[0] * gradient[0], scale[1] * gradient[1])
    scaled_norm = _norm(scaled_gradient)
    step = (
        rho * scale[0] * scaled_gradient[0] / scaled_norm,
        rho * scale[1] * scaled_gradient[1] / scaled_norm,
    )

    result = sam_sharpness(problem.model, F.mse_loss, problem.probe, rho=rho, adaptive=True)

    assert result.value == pytest.approx(problem.loss_increase(step), rel=1e-5)
    assert result.details["scaled_gradient_norm"] == pytest.approx(scaled_norm, rel=1e-10)
    assert result.details["perturbation_norm"] == pytest.approx(_norm(step), rel=1e-10)
    assert result.details["adaptive"] is True


def test_sam_sharpness_batches_agree():
    problem = Quadratic()

    whole = sam_sharpness(problem.model, F.mse_loss, problem.probe)
    batched = sam_sharpness(problem.model, F.mse_loss, problem.probe, batch_size=7)

    assert batched.value == pytest.approx(whole.value, rel=1e-9)


def test_sam_sharpness_adaptive_scale_invariant():
    # Scaling the first layer (weights and bias) of a ReLU network by 4 and the second
    # layer's weights by 1/4 keeps the function. ASAM's value stays, but plain SAM's changes.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    rescaled = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    rescaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        rescaled[0].weight.mul_(4.0)
        rescaled[0].bias.mul_(4.0)
        rescaled[2].weight.div_(4.0)
    inputs, targets = _classification_data()
    probe = topselect.make_probe_set(inputs.double(), targets)

    adaptive = [sam_sharpness(m, F.cross_entropy, probe) for m in (model, rescaled)]
    plain = [sam_sharpness(m, F.cross_entropy, probe, adaptive=False) for m in (model, rescaled)]

    assert adaptive[0].details["loss"] == pytest.approx(adaptive[1].details["loss"], rel=1e-12)
    assert adaptive[1].value == pytest.approx(adaptive[0].value, rel=1e-8)
    assert plain[1].value != pytest.approx(plain[0].value, rel=1e-2)


@pytest.mark.parametrize("adaptive", [True, False])
def test_sam_sharpness_zero_gradient_zero(adaptive):
    # All-zero weights and targets give zero outputs, an exactly zero gradient and no step.
    problem = Quadratic()
    with torch.no_grad():
        problem.model.weight.zero_()
        problem.model.bias.zero_()
    probe = topselect.make_probe_set(problem.inputs, torch.zeros_like(problem.targets))

    result = sam_sharpness(problem.model, F.mse_loss, probe, adaptive=adaptive)

    assert result.value == 0.0
    assert result.details["gradient_norm"] == 0.0
    assert result.details["perturbation_norm"] == 0.0


# ---------------------------------------------------------------------------------------
# The model is left as it was
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BASELINES))
@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_baselines_model_bitwise_unchanged(name, mode):
    model = _model_with_batchnorm()
    _set_modes(model, mode)
    before = _snapshot(model)
    modes_before = [(n, module.training) for n, module in model.named_modules()]

    _run(name, model, _classification_probe(), batch_size=20)

    after = _snapshot(model)
    assert after.keys() == before.keys()
    for key, tensor in before.items():
        assert after[key].dtype == tensor.dtype, key
        assert torch.equal(after[key], tensor), f"{key} changed"
    assert [(n, module.training) for n, module in model.named_modules()] == modes_before
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is None, f"{parameter_name} has a gradient"
        assert parameter.requires_grad, f"{parameter_name} lost requires_grad"


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_keep_existing_grad(name):
    model = _model_with_batchnorm()
    inputs, targets = _classification_data()
    F.cross_entropy(model(inputs), targets).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    _run(name, model, _classification_probe())

    for parameter_name, parameter in model.named_parameters():
        assert torch.equal(parameter.grad, grads[parameter_name]), f"{parameter_name} changed"


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_restore_modes_after_error(name):
    model = _model_with_batchnorm()
    model.train()

    def failing_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("loss failed on purpose")

    with pytest.raises(RuntimeError, match="loss failed on purpose"):
        BASELINES[name](model, failing_loss, _classification_probe(), **FAST_SETTINGS[name])

    assert all(module.training for module in model.modules())


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_work_under_no_grad(name):
    model = _model_with_batchnorm()
    probe = _classification_probe()
    expected = _run(name, model, probe)

    with torch.no_grad():
        result = _run(name, model, probe)

    assert result.value == expected.value


# ---------------------------------------------------------------------------------------
# Seeds and results
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_same_seed_identical(name):
    model = _model_with_batchnorm()
    probe = _classification_probe()
    seed = {} if name == "sam" else {"seed": 5}

    first = _run(name, model, probe, **seed)
    second = _run(name, model, probe, **seed)

    assert first.value == second.value
    assert first.details == second.details


def test_hessian_trace_other_seed_differs():
    model = _model_with_batchnorm()
    probe = _classification_probe()

    first = _run("trace", model, probe, seed=5)
    second = _run("trace", model, probe, seed=6)

    assert first.value != second.value
    assert first.details["standard_error"] != second.details["standard_error"]


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_result_json_safe(name):
    model = _model_with_batchnorm()
    probe = _classification_probe()

    result = _run(name, model, probe)

    assert isinstance(result.value, float)
    assert math.isfinite(result.value)
    assert result.seconds > 0
    assert result.probe_fingerprint == probe.fingerprint
    assert json.loads(json.dumps(result.details, allow_nan=False)) == result.details
    for key, value in result.details.items():
        assert type(value) in (float, int, bool), f"{key} is {type(value).__name__}"
    assert result.details["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert result.details["probe_size"] == len(probe)


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_nonfinite_loss_warns(name, caplog):
    model = _model_with_batchnorm()
    with torch.no_grad():
        model[0].weight[0, 0] = math.nan

    with caplog.at_level(logging.WARNING, logger="topselect.landscape"):
        result = _run(name, model, _classification_probe())

    assert math.isnan(result.value)
    assert "not finite at the model's parameters" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_cuda_matches_cpu(name):
    model = _model_with_batchnorm().double()
    inputs, targets = _classification_data()
    probe = topselect.make_probe_set(inputs.double(), targets, size=48, seed=0)
    on_cpu = _run(name, model, probe)
    model.cuda()
    before = _snapshot(model)

    on_cuda = _run(name, model, probe)

    assert on_cuda.value == pytest.approx(on_cpu.value, rel=1e-9)
    for key, tensor in before.items():
        assert torch.equal(_snapshot(model)[key], tensor), f"{key} changed"


# ---------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        pytest.param(
            "trace",
            {"n_samples": 1},
            r"n_samples must be an integer >= 2 so that the standard error is defined, "
            r"but got 1\. Pass n_samples=2 or more",
            id="samples=1",
        ),
        pytest.param("trace", {"n_samples": 0}, r"n_samples must be .* got 0", id="samples=0"),
        pytest.param(
            "trace", {"n_samples": 2.5}, r"n_samples must be an integer .* got 2\.5", id="float"
        ),
        pytest.param(
            "trace", {"n_samples": True}, r"n_samples must be an integer .* got True", id="bool"
        ),
        pytest.param(
            "trace",
            {"batch_size": 0},
            r"batch_size must be None \(the whole probe set at once\) or an integer >= 1, "
            r"but got 0",
            id="batch=0",
        ),
        pytest.param(
            "eigenvalue",
            {"n_iterations": 1},
            r"n_iterations must be an integer >= 2 because convergence compares two "
            r"estimates, but got 1\. Pass n_iterations=2 or more",
            id="iterations=1",
        ),
        pytest.param(
            "eigenvalue",
            {"tol": -1e-3},
            r"tol must be a finite number >= 0, but got -0\.001",
            id="tol<0",
        ),
        pytest.param(
            "eigenvalue", {"tol": math.nan}, r"tol must be a finite number >= 0, but got nan"
        ),
        pytest.param(
            "eigenvalue", {"batch_size": -4}, r"batch_size must be None .* got -4", id="batch<0"
        ),
        pytest.param("sam", {"rho": 0.0}, r"rho must be a finite number > 0, but got 0\.0"),
        pytest.param("sam", {"rho": -0.1}, r"rho must be a finite number > 0, but got -0\.1"),
        pytest.param("sam", {"rho": math.inf}, r"rho must be a finite number > 0, but got inf"),
        pytest.param("sam", {"eps": -1e-12}, r"eps must be a finite number >= 0, but got -1e-12"),
        pytest.param("sam", {"batch_size": 1.5}, r"batch_size must be None .* got 1\.5"),
    ],
)
def test_baselines_bad_arguments_raise(name, kwargs, pattern):
    model = _model_with_batchnorm()

    with pytest.raises(topselect.InvalidInputError, match=pattern):
        _run(name, model, _classification_probe(), **kwargs)


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_no_parameters_raise(name):
    with pytest.raises(topselect.InvalidInputError, match="no floating-point parameters"):
        _run(name, nn.Sequential(nn.ReLU()), _classification_probe())
