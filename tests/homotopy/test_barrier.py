"""Tests of the loss barrier on the straight segment between two parameter vectors."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector

import topselect

HIDDEN = 32


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """Return 256 Gaussian inputs labelled by the argmax of a random linear teacher."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 8, generator=generator)
    teacher = torch.randn(8, 3, generator=generator)
    return inputs, (inputs @ teacher).argmax(dim=1)


def _probe() -> topselect.ProbeSet:
    inputs, targets = _data()
    return topselect.make_probe_set(inputs, targets, size=256, seed=0)


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 3))


@functools.cache
def _trained_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = _mlp()
    inputs, targets = _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _trained_mlp() -> nn.Sequential:
    """Return a fresh MLP trained to a probe-set loss of about 0.003 (300 Adam steps)."""
    model = _mlp()
    model.load_state_dict(_trained_state())
    return model


def _permuted_copy(model: nn.Sequential, seed: int) -> nn.Sequential:
    """Return the same function with its hidden units in a random order."""
    order = torch.randperm(HIDDEN, generator=torch.Generator().manual_seed(seed))
    permuted = copy.deepcopy(model)
    with torch.no_grad():
        permuted[0].weight.copy_(model[0].weight[order])
        permuted[0].bias.copy_(model[0].bias[order])
        permuted[2].weight.copy_(model[2].weight[:, order])
    return permuted


def _perturbed_copy(model: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in perturbed.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return perturbed


def _batchnorm_mlp() -> nn.Sequential:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(8, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, 3),
    )
    inputs, _ = _data()
    with torch.no_grad():
        model.train()
        model(inputs[:64])
        model(inputs[64:128])
    return model


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _barrier(model, a, b, **kwargs):
    return topselect.loss_barrier(model, F.cross_entropy, _probe(), a, b, **kwargs)


# ---------------------------------------------------------------------------------------
# Exact properties
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_points", [3, 5, 11])
@pytest.mark.parametrize("make_model", [_trained_mlp, _batchnorm_mlp], ids=["mlp", "batchnorm"])
def test_loss_barrier_identical_endpoints_zero(make_model, n_points):
    model = make_model()

    result = _barrier(model, model, copy.deepcopy(model), n_points=n_points)

    np.testing.assert_array_equal(result.losses, np.full(n_points, result.losses[0]))
    assert result.barrier == 0.0


@pytest.mark.parametrize("n_points", [3, 7, 11, 13, 21])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_barrier_symmetric_bitwise(seed, n_points):
    model = _trained_mlp()
    other = _perturbed_copy(model, seed)

    forward = _barrier(model, model, other, n_points=n_points)
    backward = _barrier(model, other, model, n_points=n_points)

    np.testing.assert_array_equal(forward.losses, backward.losses[::-1])
    assert forward.barrier == backward.barrier


def test_loss_barrier_alphas_and_endpoints():
    model = _trained_mlp()
    other = _perturbed_copy(model, 0)
    probe = _probe()

    result = _barrier(model, model, other, n_points=11)

    assert result.alphas.tolist() == [k / 10 for k in range(11)]
    assert result.losses.shape == (11,)
    with torch.no_grad():
        loss_a = float(F.cross_entropy(model(probe.inputs), probe.targets))
        loss_b = float(F.cross_entropy(other(probe.inputs), probe.targets))
    assert result.losses[0] == pytest.approx(loss_a, rel=1e-6)
    assert result.losses[-1] == pytest.approx(loss_b, rel=1e-6)
    chord = (1 - result.alphas) * result.losses[0] + result.alphas * result.losses[-1]
    excess = result.losses[1:-1] - chord[1:-1]
    assert result.barrier == pytest.approx(excess.max(), abs=1e-12)


# ---------------------------------------------------------------------------------------
# A known barrier: a network and its hidden-unit permutation
# ---------------------------------------------------------------------------------------


def test_loss_barrier_permuted_copy_high():
    model = _trained_mlp()
    permuted = _permuted_copy(model, seed=1)

    result = _barrier(model, model, permuted, n_points=11)

    # Both endpoints compute the same function, so their losses agree. The midpoint
    # averages each hidden unit with an unrelated one and loses the fit. Measured with
    # torch 2.13 on CPU, the loss rises from 0.003 at the ends to 0.25 at alpha = 0.5.
    assert result.losses[0] < 0.01
    assert result.losses[-1] == pytest.approx(result.losses[0], abs=1e-6)
    assert result.barrier > 0.1
    assert 3 <= int(np.argmax(result.losses)) <= 7


# ---------------------------------------------------------------------------------------
# Parameter sources
# ---------------------------------------------------------------------------------------


def test_loss_barrier_sources_agree():
    model = _trained_mlp()
    other = _perturbed_copy(model, 3)
    as_dict = {name: p.detach().clone() for name, p in other.named_parameters()}
    as_flat = parameters_to_vector(other.parameters()).detach()

    from_model = _barrier(model, model, other)
    from_dict = _barrier(model, model, as_dict)
    from_flat = _barrier(model, model, as_flat)

    np.testing.assert_array_equal(from_dict.losses, from_model.losses)
    np.testing.assert_array_equal(from_flat.losses, from_model.losses)
    assert from_dict.barrier == from_model.barrier
    assert from_flat.barrier == from_model.barrier


def _wrong_shape_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    params["2.weight"] = torch.zeros(3, HIDDEN + 1)
    return params


def _missing_key_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    del params["2.bias"]
    params["head.bias"] = torch.zeros(3)
    return params


@pytest.mark.parametrize(
    ("make_b", "pattern"),
    [
        pytest.param(
            _wrong_shape_dict,
            r"parameter '2\.weight' of b has shape \(3, 33\), but the model's has \(3, 32\)",
            id="dict-shape",
        ),
        pytest.param(
            lambda m: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)),
            r"parameter '0\.weight' of b has shape \(16, 8\), but the model's has \(32, 8\)",
            id="narrower-model",
        ),
        pytest.param(
            _missing_key_dict,
            r"parameters b do not match the model: "
            r"missing \['2\.bias'\], unexpected \['head\.bias'\]",
            id="dict-names",
        ),
        pytest.param(
            lambda m: torch.zeros(10),
            r"flat parameters b must have shape \(387,\) to match the model, but got \(10,\)",
            id="flat-length",
        ),
        pytest.param(
            lambda m: parameters_to_vector(m.parameters()).detach().reshape(1, -1),
            r"flat parameters b must have shape \(387,\).*but got \(1, 387\)",
            id="flat-2d",
        ),
    ],
)
def test_loss_barrier_mismatch_raises(make_b, pattern):
    model = _trained_mlp()

    with pytest.raises(topselect.InvalidInputError, match=pattern):
        _barrier(model, model, make_b(model))


@pytest.mark.parametrize("n_points", [0, 1, 2])
def test_loss_barrier_too_few_points_raises(n_points):
    model = _trained_mlp()

    with pytest.raises(
        topselect.InvalidInputError, match=f"n_points must be >= 3.*got {n_points}"
    ):
        _barrier(model, model, model, n_points=n_points)


# ---------------------------------------------------------------------------------------
# The model is left as it was, and BatchNorm statistics are re-estimated
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_model", [_trained_mlp, _batchnorm_mlp], ids=["mlp", "batchnorm"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_loss_barrier_model_unchanged(make_model, mode):
    model = make_model()
    model.train(mode == "train")
    other = _perturbed_copy(model, 4)
    before = _snapshot(model)
    modes = [module.training for module in model.modules()]

    result = _barrier(model, model, other)

    assert np.all(np.isfinite(result.losses))
    after = _snapshot(model)
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), f"{name} changed"
    assert [module.training for module in model.modules()] == modes
    for name, parameter in model.named_parameters():
        assert parameter.grad is None, f"{name} has a gradient"


def _loss_with_probe_statistics(model: nn.Module, probe: topselect.ProbeSet) -> float:
    """Return the probe loss after resetting BatchNorm statistics to the probe's own."""
    clone = copy.deepcopy(model)
    clone.eval()
    for module in clone.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.reset_running_stats()
            module.momentum = None
            module.train()
    with torch.no_grad():
        clone(probe.inputs)
        clone.eval()
        return float(F.cross_entropy(clone(probe.inputs), probe.targets))


def test_loss_barrier_batchnorm_statistics_reestimated():
    model = _batchnorm_mlp()
    # Running statistics far from the data's: every hidden unit becomes about 5000 after
    # normalization, so the logits and a loss computed with these statistics are huge.
    with torch.no_grad():
        model[1].running_mean.fill_(-50.0)
        model[1].running_var.fill_(1e-4)
    other = _perturbed_copy(model, 5)
    probe = _probe()
    model.eval()
    with torch.no_grad():
        stale = float(F.cross_entropy(model(probe.inputs), probe.targets))

    result = _barrier(model, model, other)

    expected = _loss_with_probe_statistics(model, probe)
    assert result.losses[0] == pytest.approx(expected, rel=1e-6)
    assert result.losses[-1] == pytest.approx(_loss_with_probe_statistics(other, probe), rel=1e-6)
    assert stale > 10 * expected
    assert torch.all(model[1].running_mean == -50.0)
    assert torch.all(model[1].running_var == 1e-4)


# ---------------------------------------------------------------------------------------
# Strategies and batches of segments
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_loss_barrier_strategy_exact_properties(strategy):
    model = _trained_mlp()
    other = _perturbed_copy(model, 6)

    same = _barrier(model, model, copy.deepcopy(model), strategy=strategy)
    forward = _barrier(model, model, other, strategy=strategy)
    backward = _barrier(model, other, model, strategy=strategy)

    assert same.barrier == 0.0
    assert forward.barrier == backward.barrier
    np.testing.assert_array_equal(forward.losses, backward.losses[::-1])


def test_loss_barrier_strategies_agree():
    model = _trained_mlp()
    other = _permuted_copy(model, seed=2)

    loop = _barrier(model, model, other, strategy="loop")
    vmap = _barrier(model, model, other, strategy="vmap")

    np.testing.assert_allclose(vmap.losses, loop.losses, rtol=1e-5)
    assert vmap.barrier == pytest.approx(loop.barrier, rel=1e-5)


def test_segment_batch_matches_single_segments():
    model = _trained_mlp()
    flat = parameters_to_vector(model.parameters()).detach()
    ends = [parameters_to_vector(_perturbed_copy(model, s).parameters()).detach() for s in (7, 8)]
    segments = topselect.homotopy.SegmentEvaluator(model, F.cross_entropy, _probe())

    batch = segments.barriers([(flat, ends[0]), (ends[1], flat), (flat, flat)])

    for result, end in zip(batch[:2], ends, strict=True):
        alone = _barrier(model, flat, end)
        assert result.barrier == pytest.approx(alone.barrier, rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(
        batch[1].losses[::-1], _barrier(model, flat, ends[1]).losses, rtol=1e-5
    )
    assert batch[2].barrier == 0.0


def test_loss_barrier_nan_loss_gives_nan():
    model = _trained_mlp()
    broken = parameters_to_vector(model.parameters()).detach().clone()
    broken[0] = float("nan")

    result = _barrier(model, model, broken)

    assert np.isnan(result.barrier)
    assert np.isnan(result.losses[-1])


def test_loss_barrier_unknown_strategy_raises():
    model = _trained_mlp()

    with pytest.raises(topselect.InvalidInputError, match="strategy must be 'auto', 'loop'"):
        _barrier(model, model, model, strategy="grid")
