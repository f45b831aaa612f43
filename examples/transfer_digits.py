"""Select a model with topselect, then transfer it to new classes: digits 0-4 to 5-9.

Run from the repository root (well under two minutes on 2 CPU cores):

    python examples/transfer_digits.py

1. A small tracked Optuna study trains MLPs on digits 0-4; each trial saves its weights
   to its MLflow run as topselect/model.safetensors.
2. The best trial by topselect's ranking is loaded back from its run (safetensors, no
   pickle) and transferred to digits 5-9: frozen, cut at each hidden activation, with a
   ridge head fitted on cached features. Fine-tuning and training from scratch run on
   the same budget in the same process, so the wall times compare.
3. The report goes to the source trial's run (topselect/transfer.json and .png), and
   `topselect compare transfer-digits` shows the transfer columns.
"""

import logging

import optuna
import torch
import torch.nn.functional as F

import topselect
from topselect.datasets import load_digits_split
from topselect.transfer import (
    evaluate_accuracy,
    evaluate_transfer,
    load_model_weights,
    log_transfer,
    save_model_weights,
    split_classes,
)

STUDY = "transfer-digits"
EPOCHS = 15
source, target = split_classes(load_digits_split(seed=0), range(5), range(5, 10))
probe = topselect.make_probe_set(source.x_train, source.y_train, size=256, seed=0)
logger = topselect.StudyLogger()  # ./mlflow.db, or $MLFLOW_TRACKING_URI


def build_model(width: int) -> torch.nn.Module:
    torch.manual_seed(0)  # One initialization per width: trajectories stay comparable.
    return torch.nn.Sequential(
        torch.nn.Linear(64, width), torch.nn.ReLU(),
        torch.nn.Linear(width, width), torch.nn.ReLU(),
        torch.nn.Linear(width, source.n_classes),
    )  # fmt: skip


def objective(trial: optuna.Trial) -> float:
    width = trial.suggest_categorical("width", [64, 128])
    lr = trial.suggest_float("lr", 3e-4, 1e-2, log=True)
    model = build_model(width)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(trial.number)
    # A small landscape grid and no sharpness baselines keep each trial's analysis short.
    config = topselect.TrackerConfig(grid_size=15, baselines=False, trajectory_slice=False)
    with topselect.track(trial, model, probe=probe, logger=logger, config=config) as tracker:
        for epoch in range(EPOCHS):
            model.train()
            for batch in torch.randperm(len(source.x_train), generator=order).split(64):
                optimizer.zero_grad()
                F.cross_entropy(model(source.x_train[batch]), source.y_train[batch]).backward()
                optimizer.step()
            value = evaluate_accuracy(model, source.x_val, source.y_val)
            tracker.report(value, step=epoch, progress=(epoch + 1) / EPOCHS)
        save_model_weights(model, tracker.run_id, tracking_uri=logger.tracking_uri)
        return tracker.finish(value)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY,
        direction="maximize",
        sampler=topselect.TopologicalSampler(seed=0),
        pruner=topselect.TopologicalPruner(),
    )
    logger.prepare_study(study)
    study.optimize(objective, n_trials=5)
    logger.finish_study(study)

    best = topselect.rank_trials(study)[0].record
    model = build_model(study.trials[best.number].params["width"])
    load_model_weights(model, best.run_id, tracking_uri=logger.tracking_uri)
    report = evaluate_transfer(
        model, target, baselines=("finetune", "scratch"), source_info={"run_id": best.run_id}
    )
    log_transfer(report, best.run_id, tracking_uri=logger.tracking_uri)

    print(f"Source: trial {best.number} (run {best.run_id}), validation {best.value:.4f}")
    for row in report.pullback.results:
        print(
            f"  cut at {row.layer!r} ({row.dim} features, {row.head} head): "
            f"validation {row.val_accuracy:.4f}, test {row.test_accuracy:.4f}"
        )
    chosen = report.pullback.chosen
    print(
        f"Pullback (layer {chosen.layer!r}): test {chosen.test_accuracy:.4f} in "
        f"{report.pullback.seconds:.3f} s"
    )
    for name, baseline in report.baselines.items():
        print(f"{name}: test {baseline.test_accuracy:.4f} in {baseline.seconds:.3f} s")
    print(
        f"Pullback reached {report.accuracy_ratio:.1%} of fine-tuning's test accuracy and "
        f"saved {report.time_saving:.1%} of its wall time."
    )
    print(f"Compare: topselect compare {STUDY}   Browse: mlflow ui")
