"""Tests of the evaluation engine: the stacked engine agrees with the loop on every model it
accepts and declines the rest, chunk sizes follow the memory budget, and mixed precision,
channels-last and float64 models probe correctly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import topselect
from topselect.landscape._engine import _ChunkLosses, plan_evaluation, stack_steps
from topselect.landscape._evaluate import ParameterEvaluator


def _probe(n_features: int = 6, shape: tuple[int, ...] | None = None) -> topselect.ProbeSet:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, *(shape or (n_features,)), generator=generator)
    targets = torch.randint(0, 3, (64,), generator=generator)
    return topselect.make_probe_set(inputs, targets, size=40, seed=0)


def _probe_values(model, probe, **kwargs) -> topselect.landscape.LandscapeResult:
    settings = {"grid_size": 5, "radius": 0.7, "seed": 3, **kwargs}
    return topselect.probe_landscape(model, F.cross_entropy, probe, **settings)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {f"param:{n}": p.detach().clone() for n, p in model.named_parameters()}
    state.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return state


class _Square(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class _SequenceMean(nn.Module):
    """Average over the sequence axis of ``(n, t, features)``, then a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=1)


def _stackable_models() -> dict[str, tuple[nn.Module, topselect.ProbeSet]]:
    torch.manual_seed(0)
    return {
        "relu-mlp": (
            nn.Sequential(
                nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
            ),
            _probe(),
        ),
        "flatten-gelu-dropout": (
            nn.Sequential(
                nn.Flatten(), nn.Linear(12, 10), nn.GELU(), nn.Dropout(0.3), nn.Linear(10, 3)
            ),
            _probe(shape=(3, 4)),
        ),
        "nested-no-bias": (
            nn.Sequential(
                nn.Sequential(nn.Linear(6, 9, bias=False), nn.SiLU()),
                nn.Sequential(nn.Linear(9, 3)),
            ),
            _probe(),
        ),
        "single-linear": (nn.Sequential(nn.Linear(6, 3)), _probe()),
        "output-without-bias": (
            nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3, bias=False)),
            _probe(),
        ),
        "activation-last": (
            nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), nn.Tanh()),
            _probe(),
        ),
        "float64": (
            nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3)).double(),
            topselect.make_probe_set(
                torch.randn(50, 6, dtype=torch.float64), torch.randint(0, 3, (50,)), size=30
            ),
        ),
    }


@pytest.mark.parametrize("name", list(_stackable_models()))
def test_stacked_matches_loop(name):
    model, probe = _stackable_models()[name]
    before = _snapshot(model)

    loop = _probe_values(model, probe, strategy="loop")
    stacked = _probe_values(model, probe, strategy="stacked", chunk_size=4)

    assert stacked.strategy == "stacked"
    tolerance = 1e-12 if name == "float64" else 1e-5
    np.testing.assert_allclose(stacked.values, loop.values, rtol=tolerance, atol=tolerance)
    after = _snapshot(model)
    for key, tensor in before.items():
        assert torch.equal(after[key], tensor), key


def test_stacked_handles_sequence_inputs():
    # Linear layers act on the last axis; the engine keeps the middle axes of (n, t, f).
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3), nn.Flatten(), nn.Linear(15, 3)
    )
    probe = _probe(shape=(5, 4))

    assert stack_steps(model) is None  # Flatten after a linear layer is not supported.
    inner = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    steps = stack_steps(inner)
    assert steps is not None

    def mean_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.mean(dim=1), targets)

    loop = topselect.probe_landscape(inner, mean_loss, probe, grid_size=5, strategy="loop")
    stacked = topselect.probe_landscape(inner, mean_loss, probe, grid_size=5, strategy="stacked")
    np.testing.assert_allclose(stacked.values, loop.values, rtol=1e-5, atol=1e-6)


def test_stacked_centre_equals_direct_loss():
    model, probe = _stackable_models()["relu-mlp"]
    model.eval()
    with torch.no_grad():
        direct = float(F.cross_entropy(model(probe.inputs), probe.targets))

    result = _probe_values(model, probe, strategy="stacked")

    assert result.values[result.center] == pytest.approx(direct, rel=1e-6)


def _item_branch_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # Reading a value in Python is what vmap cannot trace.
    loss = F.cross_entropy(outputs, targets)
    return loss if loss.item() >= 0 else -loss


_LOSS_PATHS = {
    "functional-cross-entropy": (F.cross_entropy, "fused", False),
    "module-cross-entropy": (nn.CrossEntropyLoss(), "fused", False),
    "label-smoothing": (nn.CrossEntropyLoss(label_smoothing=0.1), "vmapped", False),
    "ignored-targets": (F.cross_entropy, "vmapped", True),
    "weighted": (nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5])), "vmapped", False),
    "item-branch": (_item_branch_loss, "plain", False),
}


@pytest.mark.parametrize("n_classes", [3, 20])
@pytest.mark.parametrize("name", list(_LOSS_PATHS))
def test_chunk_losses_equal_per_point_calls(name, n_classes):
    # Below 16 classes the fused path reads classes from a middle axis, above it not.
    loss_fn, path, ignore_some = _LOSS_PATHS[name]
    if name == "weighted":
        loss_fn = nn.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, n_classes))
    generator = torch.Generator().manual_seed(1)
    outputs = torch.randn(7, 40, n_classes, generator=generator)
    targets = torch.randint(0, n_classes, (40,), generator=generator)
    if ignore_some:
        targets[::5] = -100  # cross_entropy's default ignore_index: left out of the mean.

    losses = _ChunkLosses(loss_fn, targets)
    losses.add(outputs[:4])
    losses.add(outputs[4:])
    expected = [float(loss_fn(row, targets)) for row in outputs]

    np.testing.assert_allclose(losses.result(), expected, rtol=1e-6, atol=1e-7)
    assert losses.fused == (path == "fused")
    assert bool(losses.vmapped) == (path == "vmapped")


@pytest.mark.parametrize("n_classes", [2, 15, 16, 40])
def test_evaluator_batch_loss_equals_loss_fn(n_classes):
    model = nn.Sequential(nn.Linear(6, n_classes))
    probe = topselect.make_probe_set(
        torch.randn(60, 6), torch.randint(0, n_classes, (60,)), size=50, seed=0
    )
    outputs = model(probe.inputs).detach()
    evaluator = ParameterEvaluator(model, F.cross_entropy, probe)

    fast = evaluator.batch_loss(outputs, probe.targets)

    assert evaluator.plain_cross_entropy
    assert float(fast) == pytest.approx(float(F.cross_entropy(outputs, probe.targets)), rel=1e-6)


def test_stacked_probe_with_untraceable_loss_matches_loop():
    model, probe = _stackable_models()["relu-mlp"]

    loop = topselect.probe_landscape(model, _item_branch_loss, probe, grid_size=5, strategy="loop")
    stacked = topselect.probe_landscape(
        model, _item_branch_loss, probe, grid_size=5, strategy="stacked", chunk_size=4
    )

    np.testing.assert_allclose(stacked.values, loop.values, rtol=1e-5, atol=1e-6)


def _hooked_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    model[1].register_forward_hook(lambda module, inputs, output: output * 2)
    return model


def _parametrized_model() -> nn.Module:
    class Symmetric(nn.Module):
        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight.triu() + weight.triu(1).transpose(0, 1)

    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    parametrize.register_parametrization(model[0], "weight", Symmetric())
    return model


class _LinearTwice(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda: nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)),
            id="batchnorm",
        ),
        pytest.param(
            lambda: nn.Sequential(nn.Linear(6, 4), nn.PReLU(), nn.Linear(4, 3)), id="prelu"
        ),
        pytest.param(
            lambda: nn.Sequential(nn.Linear(6, 4), _Square(), nn.Linear(4, 3)), id="custom-module"
        ),
        pytest.param(lambda: nn.Sequential(_LinearTwice(6, 3)), id="linear-subclass"),
        pytest.param(
            lambda: nn.Sequential(nn.Linear(6, 4), nn.Softmax(dim=-1), nn.Linear(4, 3)),
            id="softmax",
        ),
        pytest.param(_hooked_model, id="forward-hook"),
        pytest.param(_parametrized_model, id="parametrization"),
        pytest.param(
            lambda: nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3).double()),
            id="mixed-dtype",
        ),
        pytest.param(lambda: nn.Sequential(nn.ReLU()), id="no-linear"),
        pytest.param(_SequenceMean, id="own-forward"),
    ],
)
def test_stack_steps_declines_unsupported_models(build):
    torch.manual_seed(0)
    assert stack_steps(build()) is None


def test_stacked_hooked_model_auto_agrees_with_direct_call():
    # A forward hook changes the output, so "auto" must not bypass it with the stacked engine.
    torch.manual_seed(0)
    model = _hooked_model()
    probe = _probe()

    result = _probe_values(model, probe, strategy="auto")

    assert result.strategy == "vmap"
    model.eval()
    with torch.no_grad():
        direct = float(F.cross_entropy(model(probe.inputs), probe.targets))
    assert result.values[result.center] == pytest.approx(direct, rel=1e-6)


# ---------------------------------------------------------------------------------------
# Memory budget and chunk sizes
# ---------------------------------------------------------------------------------------


def _evaluator() -> ParameterEvaluator:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    return ParameterEvaluator(model, F.cross_entropy, _probe())


def test_plan_bytes_per_point_counts_parameters_and_activations():
    evaluator = _evaluator()

    plan = plan_evaluation(evaluator, "vmap", None, 2**30, 25)

    # 6*16 + 16 + 16*3 + 3 = 163 parameters; per example 16 + 16 + 3 = 35 outputs of the
    # Linear, ReLU and Linear leaves; 40 probe examples; float32.
    assert plan.bytes_per_point == 4 * (163 + 35 * 40)


@pytest.mark.parametrize(
    ("strategy", "budget", "expected"),
    [
        ("vmap", 2**30, 25),  # The whole batch of 25 points fits and is under the cap.
        ("stacked", 2**30, 16),  # The CPU cap for the stacked engine.
        ("vmap", 3 * 4 * (163 + 35 * 40), 3),  # Exactly three points fit.
        ("vmap", 10, 1),  # Nothing fits; one point at a time still runs.
        ("loop", 10, 1),
    ],
)
def test_plan_chunk_size_follows_budget(strategy, budget, expected):
    plan = plan_evaluation(_evaluator(), strategy, None, budget, 25)

    assert plan.chunk_size == expected
    assert plan.memory_budget == budget


def test_probe_records_chunk_size_and_budget():
    model, probe = _stackable_models()["relu-mlp"]

    result = _probe_values(model, probe, strategy="vmap", memory_budget=3 * 2**20)

    assert result.settings["memory_budget"] == 3 * 2**20
    assert 1 <= result.settings["chunk_size"] <= 25


def test_small_budget_gives_same_values():
    model, probe = _stackable_models()["relu-mlp"]

    roomy = _probe_values(model, probe, strategy="vmap")
    tight = _probe_values(model, probe, strategy="vmap", memory_budget=1)

    assert tight.settings["chunk_size"] == 1
    np.testing.assert_allclose(tight.values, roomy.values, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Mixed precision, channels-last
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["loop", "vmap", "stacked"])
def test_autocast_bfloat16_close_to_float32(strategy):
    model, probe = _stackable_models()["relu-mlp"]
    before = _snapshot(model)

    full = _probe_values(model, probe, strategy=strategy)
    mixed = _probe_values(model, probe, strategy=strategy, autocast_dtype=torch.bfloat16)

    assert mixed.settings["autocast_dtype"] == "torch.bfloat16"
    assert not np.array_equal(mixed.values, full.values)  # Lower precision was really used.
    np.testing.assert_allclose(mixed.values, full.values, rtol=0.02, atol=0.02)
    for key, tensor in before.items():
        assert torch.equal(model.state_dict()[key.split(":", 1)[1]], tensor), key


def _conv2d_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_channels_last_model_matches_contiguous(strategy):
    probe = _probe(shape=(2, 6, 6))
    contiguous = _conv2d_model()
    channels_last = _conv2d_model().to(memory_format=torch.channels_last)
    assert channels_last[0].weight.is_contiguous(memory_format=torch.channels_last)

    expected = _probe_values(contiguous, probe, strategy=strategy)
    result = _probe_values(channels_last, probe, strategy=strategy)

    np.testing.assert_allclose(result.values, expected.values, rtol=1e-5, atol=1e-6)
    assert channels_last[0].weight.is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------
# JSON layout
# ---------------------------------------------------------------------------------------


def test_landscape_to_dict_has_diagrams():
    model, probe = _stackable_models()["relu-mlp"]
    result = _probe_values(model, probe)

    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))

    assert payload["schema_version"] == 2
    h0 = payload["diagrams"]["h0"]
    assert [death for _, death in h0].count(None) == 1  # The essential class.
    assert len(h0) == len(result.diagrams.h0)
    assert len(payload["diagrams"]["h1"]) == len(result.diagrams.h1)
    assert payload["diagrams"]["n_nonfinite"] == 0
    assert payload["settings"]["chunk_size"] >= 1
