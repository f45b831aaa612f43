"""Transfer a 1-D CNN trained on MNIST-1D classes 0-4 to classes 5-9.

Run from the repository root (needs the mnist1d package: pip install -e '.[bench]'):

    python examples/transfer_mnist1d.py

A CNN is trained on 0-4 and its weights are saved to an MLflow run as
topselect/model.safetensors. A fresh model loads them back from the run (safetensors, no
pickle) and is transferred to 5-9: frozen, cut after each activation, with a ridge head
fitted on cached features per cut. Fine-tuning runs on the same budget in the same
process. The report goes to the same run (topselect/transfer.json and .png); open it
with `mlflow ui`.
"""

import logging

import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from topselect.datasets import load_mnist1d_split
from topselect.tracking import resolve_tracking_uri
from topselect.transfer import (
    TransferConfig,
    evaluate_accuracy,
    evaluate_transfer,
    load_model_weights,
    log_transfer,
    save_model_weights,
    split_classes,
)

EXPERIMENT = "transfer-mnist1d"
SOURCE_EPOCHS = 20


def build_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv1d(1, 32, 5, padding=2), torch.nn.ReLU(),
        torch.nn.Conv1d(32, 32, 5, padding=2, stride=2), torch.nn.ReLU(),
        torch.nn.Conv1d(32, 32, 5, padding=2, stride=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(320, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 5),
    )  # fmt: skip


def train(model: torch.nn.Module, data) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(SOURCE_EPOCHS):
        model.train()
        for batch in torch.randperm(len(data.x_train), generator=order).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(data.x_train[batch]), data.y_train[batch]).backward()
            optimizer.step()
    return evaluate_accuracy(model, data.x_val, data.y_val)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    source, target = split_classes(load_mnist1d_split(seed=0), range(5), range(5, 10))
    uri = resolve_tracking_uri(None)  # ./mlflow.db, or $MLFLOW_TRACKING_URI
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    )
    run_id = client.create_run(experiment_id, run_name="cnn-0-4").info.run_id

    model = build_model()
    source_accuracy = train(model, source)
    client.log_metric(run_id, "source_val_accuracy", source_accuracy)
    save_model_weights(model, run_id, tracking_uri=uri)

    model = build_model()
    load_model_weights(model, run_id, tracking_uri=uri)
    # A 30-epoch budget keeps the example short; fine-tuning still gains until about 60
    # epochs, the budget of benchmarks/transfer.py.
    config = TransferConfig(epochs=30)
    report = evaluate_transfer(
        model, target, config=config, baselines=("finetune",), source_info={"run_id": run_id}
    )
    log_transfer(report, run_id, tracking_uri=uri)
    client.set_terminated(run_id, "FINISHED")

    print(f"Source CNN on classes 0-4: validation {source_accuracy:.4f} (run {run_id})")
    for row in report.pullback.results:
        print(
            f"  cut at {row.layer!r} ({row.dim} features): validation "
            f"{row.val_accuracy:.4f}, test {row.test_accuracy:.4f}, head {row.seconds:.3f} s"
        )
    finetune = report.baselines["finetune"]
    print(
        f"Pullback (layer {report.pullback.chosen.layer!r}): test "
        f"{report.pullback.test_accuracy:.4f} in {report.pullback.seconds:.3f} s; "
        f"fine-tuning: test {finetune.test_accuracy:.4f} in {finetune.seconds:.3f} s"
    )
    print(
        f"Pullback reached {report.accuracy_ratio:.1%} of fine-tuning's test accuracy and "
        f"saved {report.time_saving:.1%} of its wall time. Browse: mlflow ui"
    )
