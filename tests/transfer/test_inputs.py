"""Bad settings, bad target data and bad baselines fail before anything trains, with
messages that name the value and the fix."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import topselect
from topselect.transfer import (
    TransferConfig,
    evaluate_transfer,
    pullback_transfer,
    split_classes,
)
from topselect.transfer._source import check_source_inputs


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("epochs", 0, "epochs must be an integer >= 1, but got 0"),
        ("epochs", 2.5, "epochs must be an integer >= 1, but got 2.5"),
        ("batch_size", True, "batch_size must be an integer >= 1, but got True"),
        ("lr", 0.0, "lr must be a finite number > 0, but got 0.0"),
        ("lr", float("nan"), "lr must be a finite number > 0, but got nan"),
        ("weight_decay", -1.0, "weight_decay must be a finite number >= 0"),
        ("linear_solver", "svd", "linear_solver must be 'ridge' or 'lbfgs', but got 'svd'"),
        ("ridge_penalties", (), "ridge_penalties must be a non-empty sequence"),
        ("ridge_penalties", (0.1, -1.0), r"but got \(0.1, -1.0\)"),
        ("mlp_steps", 0, "mlp_steps must be an integer >= 1"),
        ("chunk_size", -5, "chunk_size must be an integer >= 1, but got -5"),
    ],
)
def test_config_rejects_bad_value(field: str, value, match: str) -> None:
    with pytest.raises(topselect.InvalidInputError, match=match):
        TransferConfig(**{field: value})


def test_config_to_dict_json_safe() -> None:
    settings = TransferConfig().to_dict()
    assert settings["ridge_penalties"] == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert settings["linear_solver"] == "ridge"


def test_split_classes_relabels(tasks) -> None:
    source, target = tasks
    assert source.n_classes == 5
    assert target.n_classes == 5
    for part in (target.y_train, target.y_val, target.y_test):
        assert sorted(part.unique().tolist()) == [0, 1, 2, 3, 4]
    assert len(source.x_train) + len(target.x_train) > 1000


@pytest.mark.parametrize(
    ("source", "target", "match"),
    [
        ([0, 1], [1, 2], r"must be disjoint, but share \[1\]"),
        ([], [1], "source_classes must list distinct labels"),
        ([0, 0], [1], r"but got \[0, 0\]"),
        ([0], [10], r"target_classes contains \[10\], outside the data's labels 0..9"),
    ],
)
def test_split_classes_rejects_bad_lists(source, target, match: str) -> None:
    from topselect.datasets import load_digits_split

    with pytest.raises(topselect.InvalidInputError, match=match):
        split_classes(load_digits_split(seed=0), source, target)


def test_labels_out_of_range_raise(source_model: nn.Module, target) -> None:
    data = dataclasses.replace(target, n_classes=3)
    with pytest.raises(topselect.InvalidInputError, match=r"y_train must lie in \[0, 3\)"):
        evaluate_transfer(source_model, data)


def test_float_labels_raise(source_model: nn.Module, target) -> None:
    data = dataclasses.replace(target, y_val=target.y_val.float())
    with pytest.raises(topselect.InvalidInputError, match="y_val must be int64 class indices"):
        evaluate_transfer(source_model, data)


def test_mismatched_lengths_raise(source_model: nn.Module, target) -> None:
    data = dataclasses.replace(target, y_test=target.y_test[:-1])
    with pytest.raises(topselect.InvalidInputError, match="must hold the same number"):
        evaluate_transfer(source_model, data)


def test_not_a_data_split_raises(source_model: nn.Module, target) -> None:
    with pytest.raises(
        topselect.InvalidInputError, match="must be a topselect.datasets.DataSplit"
    ):
        evaluate_transfer(source_model, (target.x_train, target.y_train))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("baselines", "match"),
    [
        (["finetune", "distill"], r"distinct names from \['finetune', 'scratch', 'lp_ft'\]"),
        (["scratch", "scratch"], "but got \\['scratch', 'scratch'\\]"),
    ],
)
def test_bad_baselines_raise(source_model: nn.Module, target, baselines, match: str) -> None:
    with pytest.raises(topselect.InvalidInputError, match=match):
        evaluate_transfer(source_model, target, baselines=baselines)


def test_scratch_without_reset_raises(target) -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gain

    model = nn.Sequential(Scaled(), nn.ReLU(), nn.Linear(64, 5))
    with pytest.raises(topselect.InvalidInputError, match="cannot re-initialize module '0'"):
        evaluate_transfer(model, target, baselines=["scratch"])
    config = TransferConfig(epochs=1)
    report = evaluate_transfer(model, target, config=config, baselines=["finetune"])
    assert set(report.baselines) == {"finetune"}


def test_config_passed_as_layers_raises(source_model: nn.Module, target) -> None:
    with pytest.raises(topselect.InvalidInputError, match="layers must be a sequence of module"):
        evaluate_transfer(source_model, target, TransferConfig())  # type: ignore[arg-type]


def test_bad_layer_fails_before_training(source_model: nn.Module, target) -> None:
    with pytest.raises(topselect.InvalidInputError, match="valid names"):
        evaluate_transfer(source_model, target, layers=["relu"], baselines=["finetune"])


@pytest.mark.parametrize("transfer", [evaluate_transfer, pullback_transfer])
@pytest.mark.parametrize("source", [None, "model.pt", {"0.weight": torch.zeros(1)}])
def test_non_module_source_raises(transfer, source, target) -> None:
    with pytest.raises(topselect.InvalidInputError, match="source must be a torch.nn.Module"):
        transfer(source, target)


@pytest.mark.parametrize(
    ("convert_model", "x_dtype", "match"),
    [
        (
            nn.Module.double,
            torch.float32,
            r"x_train has dtype torch.float32, but the source model's parameters are "
            r"torch.float64; convert the model with model.float\(\)",
        ),
        (
            nn.Module.half,
            torch.float32,
            r"parameters are torch.float16; convert the model with model.float\(\) or cast "
            r"the data with x_train.to\(torch.float16\)",
        ),
        (
            nn.Module.float,
            torch.float64,
            r"x_train has dtype torch.float64, but the source model's parameters are "
            r"torch.float32; convert the model with model.to\(torch.float64\)",
        ),
    ],
)
@pytest.mark.parametrize("transfer", [evaluate_transfer, pullback_transfer])
def test_dtype_mismatch_raises(
    transfer, source_model: nn.Module, target, convert_model, x_dtype, match: str
) -> None:
    data = dataclasses.replace(
        target,
        x_train=target.x_train.to(x_dtype),
        x_val=target.x_val.to(x_dtype),
        x_test=target.x_test.to(x_dtype),
    )
    with pytest.raises(topselect.InvalidInputError, match=match):
        transfer(convert_model(source_model), data)


def test_dtype_mismatch_names_part(source_model: nn.Module, target) -> None:
    data = dataclasses.replace(target, x_test=target.x_test.double())
    with pytest.raises(topselect.InvalidInputError, match="x_test has dtype torch.float64"):
        evaluate_transfer(source_model, data)


@pytest.mark.parametrize("transfer", [evaluate_transfer, pullback_transfer])
def test_wrong_feature_width_raises(transfer, source_model: nn.Module, target) -> None:
    data = dataclasses.replace(
        target,
        x_train=target.x_train[:, :10],
        x_val=target.x_val[:, :10],
        x_test=target.x_test[:, :10],
    )
    match = (
        r"the source model failed on the training inputs x_train\[:2\] of shape \(2, 10\): "
        r"mat1 and mat2 shapes cannot be multiplied"
    )
    with pytest.raises(topselect.InvalidInputError, match=match):
        transfer(source_model, data)


@pytest.mark.parametrize("transfer", [evaluate_transfer, pullback_transfer])
def test_extra_input_axis_raises(transfer, source_model: nn.Module, target) -> None:
    data = dataclasses.replace(
        target,
        x_train=target.x_train[:, None, :],
        x_val=target.x_val[:, None, :],
        x_test=target.x_test[:, None, :],
    )
    match = (
        r"mapped inputs of shape \(2, 1, 64\) to an output of shape \(2, 1, 5\), but "
        r"transfer needs logits of shape \(n, classes\)"
    )
    with pytest.raises(topselect.InvalidInputError, match=match):
        transfer(source_model, data)


def test_non_tensor_output_raises(target) -> None:
    class TupleOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 5))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.body(x), x

    with pytest.raises(topselect.InvalidInputError, match="returned a tuple for inputs"):
        evaluate_transfer(TupleOutput(), target)


def test_shape_probe_leaves_model_unchanged(target) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 5)
    )
    model.train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    check_source_inputs(model, target)
    after = model.state_dict()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
    assert all(module.training for module in model.modules())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("part", "value", "count"),
    [("train", float("nan"), 3), ("val", float("inf"), 1), ("test", float("-inf"), 2)],
)
@pytest.mark.parametrize("transfer", [evaluate_transfer, pullback_transfer])
def test_non_finite_inputs_raise(
    transfer, source_model: nn.Module, target, part: str, value: float, count: int
) -> None:
    x = getattr(target, f"x_{part}").clone()
    x.view(-1)[:count] = value
    data = dataclasses.replace(target, **{f"x_{part}": x})
    match = rf"x_{part} contains {count} non-finite values \(NaN or inf\)"
    with pytest.raises(topselect.InvalidInputError, match=match):
        transfer(source_model, data)


@pytest.mark.parametrize("transfer", [evaluate_transfer, pullback_transfer])
def test_single_training_class_raises(transfer, source_model: nn.Module, target) -> None:
    keep = target.y_train == 3
    data = dataclasses.replace(target, x_train=target.x_train[keep], y_train=target.y_train[keep])
    match = "y_train must contain at least 2 distinct classes, but contains only class 3"
    with pytest.raises(topselect.InvalidInputError, match=match):
        transfer(source_model, data)


def test_checks_run_before_training(
    source_model: nn.Module, target, monkeypatch: pytest.MonkeyPatch
) -> None:
    from topselect.transfer import _report

    def fail(*args, **kwargs):
        raise AssertionError("training started before the inputs were checked")

    monkeypatch.setattr(_report, "run_pullback", fail)
    monkeypatch.setattr(_report, "run_baseline", fail)
    data = dataclasses.replace(target, x_val=target.x_val.double())
    with pytest.raises(topselect.InvalidInputError, match="x_val has dtype"):
        evaluate_transfer(source_model, data)
