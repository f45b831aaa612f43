"""Tests of landscape probing: the model is left untouched, values are reproducible and
match direct evaluation, both grid strategies agree, and directions are filter-normalized."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import topselect
from topselect.landscape import filter_normalized_direction

GRID_SIZE = 5
RADIUS = 0.5


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(200, 6, generator=generator)
    targets = torch.randint(0, 3, (200,), generator=generator)
    return inputs, targets


def _model_with_batchnorm() -> nn.Sequential:
    """Return an MLP with BatchNorm1d and Dropout whose running statistics are not defaults."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, 3),
    )
    inputs, _ = _data()
    model.train()
    with torch.no_grad():
        for start in range(0, 200, 50):
            model(inputs[start : start + 50])
    return model


def _probe() -> topselect.ProbeSet:
    inputs, targets = _data()
    return topselect.make_probe_set(inputs, targets, size=48, seed=0)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return clones of every parameter and buffer, by name."""
    state = {f"param:{n}": p.detach().clone() for n, p in model.named_parameters()}
    state.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return state


def _set_modes(model: nn.Module, mode: str) -> None:
    if mode == "train":
        model.train()
    elif mode == "eval":
        model.eval()
    else:  # Mixed: the container and Dropout in train mode, BatchNorm in eval mode.
        model.train()
        model[1].eval()


def _direct_loss(model: nn.Module, probe: topselect.ProbeSet) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(probe.inputs), probe.targets))


def _probe_landscape(model, probe, **kwargs):
    settings = {"grid_size": GRID_SIZE, "radius": RADIUS, "seed": 1, **kwargs}
    return topselect.probe_landscape(model, F.cross_entropy, probe, **settings)


# ---------------------------------------------------------------------------------------
# The model is left as it was
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_probe_landscape_model_bitwise_unchanged(strategy, mode):
    model = _model_with_batchnorm()
    _set_modes(model, mode)
    before = _snapshot(model)

    _probe_landscape(model, _probe(), strategy=strategy)

    after = _snapshot(model)
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype, name
        assert torch.equal(after[name], tensor), f"{name} changed"
    for name, parameter in model.named_parameters():
        assert parameter.grad is None, f"{name} has a gradient"
        assert parameter.requires_grad, f"{name} lost requires_grad"


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_probe_landscape_restores_module_modes(strategy, mode):
    model = _model_with_batchnorm()
    _set_modes(model, mode)
    before = [(name, module.training) for name, module in model.named_modules()]

    _probe_landscape(model, _probe(), strategy=strategy)

    after = [(name, module.training) for name, module in model.named_modules()]
    assert after == before


def test_probe_landscape_restores_modes_after_error():
    model = _model_with_batchnorm()
    model.train()

    def failing_loss(outputs, targets):
        raise RuntimeError("loss failed on purpose")

    with pytest.raises(RuntimeError, match="loss failed on purpose"):
        topselect.probe_landscape(model, failing_loss, _probe(), grid_size=3, strategy="loop")

    assert all(module.training for module in model.modules())


# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------


def test_probe_landscape_same_seed_identical():
    model = _model_with_batchnorm()
    probe = _probe()

    first = _probe_landscape(model, probe, seed=3)
    second = _probe_landscape(model, probe, seed=3)

    np.testing.assert_array_equal(first.values, second.values)
    assert first.scores == second.scores


def test_probe_landscape_other_seed_differs():
    model = _model_with_batchnorm()
    probe = _probe()

    first = _probe_landscape(model, probe, seed=3)
    second = _probe_landscape(model, probe, seed=4)

    assert first.values[2, 2] == second.values[2, 2]
    assert not np.allclose(first.values, second.values, rtol=0, atol=1e-4)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_probe_landscape_centre_equals_direct_loss(strategy, mode):
    model = _model_with_batchnorm()
    _set_modes(model, mode)
    probe = _probe()

    result = _probe_landscape(model, probe, strategy=strategy)

    direct = _direct_loss(model, probe)
    assert result.center == (2, 2)
    assert result.axis[2] == 0.0
    assert result.values[result.center] == pytest.approx(direct, rel=1e-6)
    assert result.scores["center_loss"] == result.values[result.center]


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_probe_landscape_loop_vmap_agree(chunk_size):
    model = _model_with_batchnorm()
    probe = _probe()

    loop = _probe_landscape(model, probe, strategy="loop")
    vmapped = _probe_landscape(model, probe, strategy="vmap", chunk_size=chunk_size)

    assert loop.strategy == "loop"
    assert vmapped.strategy == "vmap"
    np.testing.assert_allclose(vmapped.values, loop.values, rtol=0, atol=1e-5)


class _CustomMLP(nn.Module):
    """A two-layer MLP with its own forward, which the stacked engine does not take."""

    def __init__(self, n_in: int, width: int, n_out: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(n_in, width)
        self.out = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


@pytest.mark.parametrize(("width", "expected"), [(8, "vmap"), (5000, "loop")])
def test_probe_landscape_auto_strategy_by_size(width, expected):
    torch.manual_seed(0)
    inputs, _ = _data()
    model = _CustomMLP(inputs.shape[1], width, 3)
    n_parameters = sum(p.numel() for p in model.parameters())
    assert (n_parameters > 40_000) == (expected == "loop")

    result = topselect.probe_landscape(model, F.cross_entropy, _probe(), grid_size=3)

    assert result.strategy == expected


@pytest.mark.parametrize("width", [8, 5000])
def test_probe_landscape_auto_stacked_for_sequential_mlp(width):
    torch.manual_seed(0)
    inputs, _ = _data()
    model = nn.Sequential(nn.Linear(inputs.shape[1], width), nn.ReLU(), nn.Linear(width, 3))

    result = topselect.probe_landscape(model, F.cross_entropy, _probe(), grid_size=3)

    assert result.strategy == "stacked"


def test_probe_landscape_auto_loop_for_convolutions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 1, 10, generator=generator)
    y = torch.randint(0, 3, (20,), generator=generator)
    probe = topselect.make_probe_set(x, y, size=20)

    result = topselect.probe_landscape(model, F.cross_entropy, probe, grid_size=3)

    assert result.strategy == "loop"


def test_probe_landscape_result_fields():
    model = _model_with_batchnorm()
    probe = _probe()

    result = _probe_landscape(model, probe, strategy="auto")

    assert result.values.shape == (GRID_SIZE, GRID_SIZE)
    assert result.values.dtype == np.float64
    assert np.all(np.isfinite(result.values))
    assert result.axis.tolist() == [-0.5, -0.25, 0.0, 0.25, 0.5]
    assert result.strategy == "vmap"  # BatchNorm rules out "stacked"; the model is small.
    assert result.probe_fingerprint == probe.fingerprint
    assert result.seed == 1
    assert result.n_parameters == sum(p.numel() for p in model.parameters())
    assert result.diagrams.h0.shape[1] == 2


def test_probe_landscape_moves_along_directions():
    # The value at grid point (i, j) is the loss at theta + axis[i] d1 + axis[j] d2, with
    # d1 and d2 the first two directions drawn from the seed.
    model = _model_with_batchnorm()
    probe = _probe()
    result = _probe_landscape(model, probe, strategy="loop", seed=5)

    params = {n: p.detach() for n, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(5)
    d1 = filter_normalized_direction(params, generator)
    d2 = filter_normalized_direction(params, generator)
    i, j = 0, 3
    moved = {
        n: p + float(result.axis[i]) * d1[n] + float(result.axis[j]) * d2[n]
        for n, p in params.items()
    }
    buffers = {n: b for n, b in model.named_buffers()}
    model.eval()
    with torch.no_grad():
        outputs = torch.func.functional_call(model, {**buffers, **moved}, (probe.inputs,))
        expected = float(F.cross_entropy(outputs, probe.targets))

    assert result.values[i, j] == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        pytest.param(
            {"grid_size": 4}, r"grid_size must be odd and >= 3.*got 4\. Try 5", id="even"
        ),
        pytest.param({"grid_size": 1}, r"grid_size must be odd and >= 3.*got 1\. Try 3", id="one"),
        pytest.param({"grid_size": 0}, r"grid_size must be odd and >= 3.*got 0", id="zero"),
        pytest.param(
            {"radius": 0.0}, r"radius must be a finite number > 0, but got 0\.0", id="r=0"
        ),
        pytest.param({"radius": -1.0}, r"radius must be .* > 0, but got -1\.0", id="r<0"),
        pytest.param(
            {"radius": math.nan}, r"radius must be a finite number > 0, but got nan", id="nan"
        ),
        pytest.param(
            {"radius": math.inf}, r"radius must be a finite number > 0, but got inf", id="inf"
        ),
        pytest.param(
            {"strategy": "gpu"},
            r"strategy must be one of 'auto', 'loop', 'vmap', 'stacked', but got 'gpu'",
            id="strategy",
        ),
        pytest.param({"chunk_size": 0}, r"chunk_size must be >= 1 or None, but got 0", id="chunk"),
        pytest.param(
            {"memory_budget": 0},
            r"memory_budget must be a positive number of bytes, but got 0",
            id="budget=0",
        ),
        pytest.param(
            {"memory_budget": 1.5e9},
            r"memory_budget must be a positive number of bytes, but got 1500000000\.0",
            id="budget-float",
        ),
        pytest.param(
            {"strategy": "vmap", "chunk_size": 10, "memory_budget": 1000},
            r"chunk_size=10 needs about .* MiB \(\d+ bytes per point\), more than "
            r"memory_budget=1000 bytes\. Use chunk_size <= 1",
            id="chunk-over-budget",
        ),
        pytest.param(
            {"strategy": "stacked"},
            r"strategy='stacked' needs an nn\.Sequential of nn\.Linear layers",
            id="stacked-unsupported",
        ),
    ],
)
def test_probe_landscape_bad_arguments_raise(kwargs, pattern):
    model = _model_with_batchnorm()

    with pytest.raises(topselect.InvalidInputError, match=pattern):
        _probe_landscape(model, _probe(), **kwargs)


def test_probe_landscape_no_parameters_raises():
    with pytest.raises(topselect.InvalidInputError, match="no floating-point parameters"):
        _probe_landscape(nn.Sequential(nn.ReLU()), _probe())


# ---------------------------------------------------------------------------------------
# Filter-normalized directions
# ---------------------------------------------------------------------------------------


def _conv_model() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=3),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    )


@pytest.mark.parametrize("make_model", [_model_with_batchnorm, _conv_model], ids=["mlp", "conv"])
def test_filter_normalized_direction_row_norms(make_model):
    params = {n: p.detach() for n, p in make_model().named_parameters()}

    direction = filter_normalized_direction(params, torch.Generator().manual_seed(0))

    assert list(direction) == list(params)
    for name, p in params.items():
        d = direction[name]
        assert d.shape == p.shape, name
        assert d.dtype == p.dtype, name
        if p.dim() >= 2:
            torch.testing.assert_close(
                d.flatten(1).norm(dim=1), p.flatten(1).norm(dim=1), rtol=1e-5, atol=0
            )
            assert not torch.allclose(d, p), f"{name} direction equals the weights"
        else:
            assert torch.count_nonzero(d) == 0, f"{name} (1-D) direction is not zero"


def test_filter_normalized_direction_seeded():
    params = {n: p.detach() for n, p in _conv_model().named_parameters()}

    first = filter_normalized_direction(params, torch.Generator().manual_seed(9))
    second = filter_normalized_direction(params, torch.Generator().manual_seed(9))
    other = filter_normalized_direction(params, torch.Generator().manual_seed(10))

    for name in params:
        assert torch.equal(first[name], second[name]), name
    assert not torch.equal(first["0.weight"], other["0.weight"])


def test_filter_normalized_direction_zero_row_stays_zero():
    weight = torch.ones(3, 4)
    weight[1] = 0.0

    direction = filter_normalized_direction({"w": weight}, torch.Generator().manual_seed(0))

    assert torch.count_nonzero(direction["w"][1]) == 0
    assert torch.all(torch.isfinite(direction["w"]))
    torch.testing.assert_close(direction["w"].norm(dim=1), torch.tensor([2.0, 0.0, 2.0]))


def test_filter_normalized_direction_keeps_float64():
    weight = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    direction = filter_normalized_direction({"w": weight}, torch.Generator().manual_seed(0))

    assert direction["w"].dtype == torch.float64
    torch.testing.assert_close(direction["w"].norm(dim=1), weight.norm(dim=1), rtol=1e-6, atol=0)
