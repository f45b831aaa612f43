"""``topselect compare`` shows the transfer metrics of trial runs as columns."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from topselect.cli import cli
from topselect.datasets import load_digits_split
from topselect.transfer import TransferConfig, evaluate_transfer, log_transfer, split_classes


@pytest.fixture(autouse=True)
def ignore_user_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_compare_shows_transfer_columns(synthetic_study) -> None:
    _, target = split_classes(load_digits_split(seed=0), range(5), range(5, 10))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 5))
    report = evaluate_transfer(
        model, target, config=TransferConfig(epochs=1), baselines=["finetune"]
    )
    log_transfer(report, synthetic_study.run_ids[1], tracking_uri=synthetic_study.tracking_uri)

    uri = synthetic_study.tracking_uri
    result = CliRunner().invoke(cli, ["compare", "synthetic", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.lstrip().startswith("rank"))
    for column in ("transfer_accuracy", "transfer_ratio", "transfer_saving"):
        assert column in header.split()

    result = CliRunner().invoke(
        cli, ["compare", "synthetic", "--tracking-uri", uri, "--format", "json",
              "--sort=-transfer_ratio"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    trials = json.loads(result.output)["trials"]
    assert trials[0]["trial"] == 1
    assert trials[0]["extra"]["transfer_ratio"] == pytest.approx(report.accuracy_ratio)
    assert trials[0]["extra"]["transfer_saving"] == pytest.approx(report.time_saving)
    assert all("transfer_ratio" not in t["extra"] for t in trials[1:])


def test_compare_transfer_run_short_columns(synthetic_study) -> None:
    _, target = split_classes(load_digits_split(seed=0), range(5), range(5, 10))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 5))
    config = TransferConfig(epochs=1)
    report = evaluate_transfer(model, target, config=config, baselines=["finetune"])
    run_id = log_transfer(report, tracking_uri=synthetic_study.tracking_uri)

    uri = synthetic_study.tracking_uri
    result = CliRunner().invoke(
        cli, ["compare", "--run-id", run_id, "--tracking-uri", uri, "--format", "json"]
    )
    # A transfer run is not a trial run, so compare reports it as partial (exit code 1).
    assert result.exit_code == 1, result.output
    document = json.loads(result.output[result.output.index("{") :])
    extra = document["trials"][0]["extra"]
    assert extra["transfer_ratio"] == pytest.approx(report.accuracy_ratio)
    assert extra["transfer_accuracy"] == pytest.approx(report.pullback.test_accuracy)
    assert not [key for key in extra if key.startswith("topselect.transfer.")]
