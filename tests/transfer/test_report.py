"""evaluate_transfer: baselines on copies, ratios, and the JSON document."""

from __future__ import annotations

import json

import torch
from torch import nn

from topselect.transfer import TRANSFER_SCHEMA_VERSION, evaluate_transfer, transfer_figure


def test_baselines_leave_source_unchanged(source_model: nn.Module, target, fast_config) -> None:
    before = {k: v.clone() for k, v in source_model.state_dict().items()}
    report = evaluate_transfer(
        source_model, target, config=fast_config, baselines=("finetune", "scratch", "lp_ft")
    )
    for name, tensor in source_model.state_dict().items():
        assert torch.equal(before[name], tensor), name
    assert list(report.baselines) == ["finetune", "scratch", "lp_ft"]
    for baseline in report.baselines.values():
        assert baseline.epochs == 2
        assert 1 <= baseline.best_epoch <= 2
        assert 0.0 <= baseline.test_accuracy <= 1.0
        assert baseline.seconds > 0


def test_ratios_follow_finetune(source_model: nn.Module, target, fast_config) -> None:
    report = evaluate_transfer(source_model, target, config=fast_config, baselines=["finetune"])
    finetune = report.baselines["finetune"]
    assert report.accuracy_ratio == report.pullback.test_accuracy / finetune.test_accuracy
    assert report.time_ratio == report.pullback.seconds / finetune.seconds
    assert report.time_saving == 1.0 - report.time_ratio
    metrics = report.metrics()
    assert metrics["accuracy_ratio"] == report.accuracy_ratio
    assert metrics["finetune_seconds"] == finetune.seconds


def test_no_finetune_no_ratios(source_model: nn.Module, target, fast_config) -> None:
    report = evaluate_transfer(source_model, target, config=fast_config, baselines=["scratch"])
    assert report.accuracy_ratio is None
    assert report.time_saving is None
    assert "accuracy_ratio" not in report.metrics()
    assert report.to_json()["ratios"]["time_ratio"] is None


def test_lp_ft_starts_from_linear_probe(source_model: nn.Module, target, fast_config) -> None:
    report = evaluate_transfer(source_model, target, config=fast_config, baselines=["lp_ft"])
    details = report.baselines["lp_ft"].details
    assert 0.0 < details["probe_val_accuracy"] <= 1.0
    assert details["probe_solver"] == "ridge"
    assert details["probe_seconds"] > 0


def test_json_document_is_standard(source_model: nn.Module, target, fast_config) -> None:
    report = evaluate_transfer(
        source_model, target, config=fast_config, source_info={"run_id": "abc"}
    )
    document = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert document["schema_version"] == TRANSFER_SCHEMA_VERSION
    assert [row["layer"] for row in document["layers"]] == ["1", "3"]
    assert document["chosen"]["layer"] in ("1", "3")
    assert document["head"] == "4"
    assert document["source"] == {"run_id": "abc"}
    assert document["sizes"] == {"train": 537, "val": 179, "test": 180}
    assert set(document["baselines"]) == {"finetune", "scratch"}
    assert document["settings"]["epochs"] == 2
    assert document["versions"]["torch"] == torch.__version__


def test_figure_has_two_panels(source_model: nn.Module, target, fast_config) -> None:
    report = evaluate_transfer(source_model, target, config=fast_config)
    figure = transfer_figure(report)
    assert len(figure.axes) == 2
    assert figure.axes[0].get_xlabel() == "cut layer (module name)"
