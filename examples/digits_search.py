"""Plug topselect into an Optuna study of your own: a complete, small example.

Run from the repository root (one to two minutes on 2 CPU cores):

    python examples/digits_search.py

Results go to ./mlflow.db; open them with `mlflow ui` and rank them with
`topselect compare digits-example`.
"""

import optuna
import torch
import torch.nn.functional as F

import topselect
from topselect.datasets import load_digits_split

EPOCHS = 15
data = load_digits_split(seed=0)
probe = topselect.make_probe_set(data.x_train, data.y_train, size=512, seed=0)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def objective(trial: optuna.Trial) -> float:
    width = trial.suggest_categorical("width", [32, 64, 128])
    lr = trial.suggest_float("lr", 1e-3, 0.1, log=True)
    torch.manual_seed(0)  # One initialization for all trials: trajectories stay comparable.
    model = torch.nn.Sequential(
        torch.nn.Linear(data.n_features, width), torch.nn.ReLU(), torch.nn.Linear(width, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    with topselect.track(trial, model, probe=probe) as tracker:
        for epoch in range(EPOCHS):
            model.train()
            for batch in torch.randperm(len(data.x_train)).split(64):
                optimizer.zero_grad()
                F.cross_entropy(model(data.x_train[batch]), data.y_train[batch]).backward()
                optimizer.step()
            val = accuracy(model, data.x_val, data.y_val)
            tracker.report(val, step=epoch, progress=(epoch + 1) / EPOCHS)
        return tracker.finish(val)


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="digits-example",
        direction="maximize",
        sampler=topselect.TopologicalSampler(seed=0),
        pruner=topselect.TopologicalPruner(),
    )
    topselect.StudyLogger().prepare_study(study)
    study.optimize(objective, n_trials=12)
    for entry in topselect.rank_trials(study)[:5]:
        record = entry.record
        print(
            f"#{entry.rank} trial {record.number} {record.state}: "
            f"value {entry.ranked_value:.4f}, adjusted {entry.adjusted_value:.4f} "
            f"({entry.evidence})"
        )
