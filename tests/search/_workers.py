"""Worker processes for the multi-process search tests, run as ``python _workers.py``.

Each command reads one JSON argument and prints one JSON document on stdout:

- ``optimize``: run trials of the shared tracked study (a tiny MLP on seeded synthetic
  data, trained full-batch through ``topselect.track``) until the worker's share is done.
- ``decide``: load a study snapshot, ask TopologicalPruner about every RUNNING trial, then
  ask TopologicalSampler for the params of one new trial.

The file is not collected by pytest (its name does not start with ``test_``); the tests
import its helpers and start it with ``subprocess``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from torch import nn

import topselect
from topselect.homotopy import LocalWaypointStore

SEED = 0
N_FEATURES = 4
HIDDEN = 8
N_EXAMPLES = 96
STEPS = 8
WORKER_ATTR = "test.worker"
STEPS_ATTR = "test.steps"

#: Tracker settings shared by every worker: a 5 x 5 slice, no trajectory slice and no
#: sharpness baselines, so the analysis of a trial takes tens of milliseconds.
TRACKER_CONFIG = topselect.TrackerConfig(
    grid_size=5,
    trajectory_slice=False,
    baselines=False,
    fit_loss=0.3,
    seed=SEED,
)


# -- storages ------------------------------------------------------------------------------


def open_storage(spec: dict[str, str]) -> optuna.storages.BaseStorage:
    """Open the Optuna storage described by ``spec`` (``kind`` and ``url`` or ``path``).

    SQLite gets a 60 s busy timeout, because four writers contend for one file lock.
    """
    kind = spec["kind"]
    if kind == "sqlite":
        return optuna.storages.RDBStorage(
            spec["url"], engine_kwargs={"connect_args": {"timeout": 60}}
        )
    if kind == "journal":
        backend = optuna.storages.journal.JournalFileBackend(spec["path"])
        return optuna.storages.JournalStorage(backend)
    if kind == "postgresql":
        return optuna.storages.RDBStorage(spec["url"])
    raise ValueError(f"unknown storage kind {kind!r}")


# -- the tracked objective -----------------------------------------------------------------


def synthetic_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Standard normal points in ``N_FEATURES`` dimensions, labelled by the sign of
    ``x0 + 0.5 x1``, from a fixed seed."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(N_EXAMPLES, N_FEATURES, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def build_model() -> nn.Module:
    """Return the MLP every trial trains, initialized from ``SEED`` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return nn.Sequential(nn.Linear(N_FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2))


def make_objective(waypoint_dir: Path, member_dir: Path, worker: int):
    """Return an objective that trains the MLP with SGD at a sampled learning rate and momentum.

    It reports the training loss (minimized) after each of ``STEPS`` full-batch steps,
    so the study's pruner decides at every step. The final waypoints of every trial are
    saved under ``member_dir`` as ``<trial number>.npz``, so a test can recompute the
    loss barriers a worker measured.
    """
    x, y = synthetic_data()
    probe = topselect.make_probe_set(x, y, size=64, seed=SEED)
    store = LocalWaypointStore(waypoint_dir)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 0.05, 2.0, log=True)
        momentum = trial.suggest_categorical("momentum", [0.0, 0.9])
        trial.set_user_attr(WORKER_ATTR, worker)
        model = build_model()
        velocities = [torch.zeros_like(p) for p in model.parameters()]
        with topselect.track(
            trial,
            model,
            probe=probe,
            config=TRACKER_CONFIG,
            logger=False,
            waypoint_store=store,
        ) as tracker:
            try:
                for step in range(STEPS):
                    loss = F.cross_entropy(model(x), y)
                    gradients = torch.autograd.grad(loss, list(model.parameters()))
                    sgd_step(model, gradients, velocities, lr, momentum)
                    tracker.report(loss.item(), step=step, progress=(step + 1) / STEPS)
                    trial.set_user_attr(STEPS_ATTR, step + 1)
            finally:
                save_waypoints(member_dir / f"{trial.number}.npz", tracker.recorder.waypoints)
            with torch.no_grad():
                final_loss = F.cross_entropy(model(x), y).item()
            return tracker.finish(final_loss)

    return objective


def sgd_step(
    model: nn.Module,
    gradients: tuple[torch.Tensor, ...],
    velocities: list[torch.Tensor],
    lr: float,
    momentum: float,
) -> None:
    """Take one step of SGD with momentum, as ``torch.optim.SGD`` computes it.

    Written out because the first ``torch.optim`` optimizer imports torch's compiler
    stack, which costs each worker process about 2 s on two CPU cores.
    """
    with torch.no_grad():
        for parameter, gradient, velocity in zip(
            model.parameters(), gradients, velocities, strict=True
        ):
            velocity.mul_(momentum).add_(gradient)
            parameter.sub_(lr * velocity)


def save_waypoints(path: Path, waypoints: dict[float, torch.Tensor]) -> None:
    fractions = sorted(waypoints)
    np.savez(
        path,
        fractions=np.asarray(fractions, dtype=np.float64),
        waypoints=np.stack([waypoints[f].detach().numpy() for f in fractions]),
    )


def load_waypoints(path: Path) -> dict[float, torch.Tensor]:
    with np.load(path, allow_pickle=False) as data:
        fractions = data["fractions"].tolist()
        stacked = torch.from_numpy(np.array(data["waypoints"], dtype=np.float32))
    return {float(f): stacked[i] for i, f in enumerate(fractions)}


def make_sampler(seed: int) -> topselect.TopologicalSampler:
    """TPE behind the topology adjustment, with constant liar so that workers spread out."""
    base = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, constant_liar=True)
    return topselect.TopologicalSampler(base, weight=0.05)


def make_pruner() -> topselect.TopologicalPruner:
    base = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=3)
    return topselect.TopologicalPruner(base, min_class_members=2, warmup_steps=3)


def optimize(args: dict[str, Any]) -> dict[str, Any]:
    """Run the worker's share of trials in each study of ``args["studies"]``, in order.

    One process serves every storage kind in turn, so the test pays the import of torch
    and topselect once per worker rather than once per worker and storage.
    """
    worker = int(args["worker"])
    torch.set_num_threads(1)
    ran: dict[str, list[int]] = {}
    for entry in args["studies"]:
        study = optuna.load_study(
            study_name=entry["study_name"],
            storage=open_storage(entry["storage"]),
            # A seed per worker: equal seeds would propose the same startup params.
            sampler=make_sampler(SEED + worker),
            pruner=make_pruner(),
        )
        objective = make_objective(Path(entry["waypoint_dir"]), Path(entry["member_dir"]), worker)
        numbers: list[int] = []
        study.optimize(
            objective,
            n_trials=int(args["n_trials"]),
            callbacks=[lambda s, t, numbers=numbers: numbers.append(t.number)],
        )
        ran[entry["storage"]["kind"]] = numbers
    return {"worker": worker, "pid": os.getpid(), "trials": ran}


# -- decisions on a snapshot ---------------------------------------------------------------


def decide(args: dict[str, Any]) -> dict[str, Any]:
    """Return the pruner's decisions on every RUNNING trial and one sampled parameter set."""
    storage = open_storage(args["storage"])
    study = optuna.load_study(
        study_name=args["study_name"],
        storage=storage,
        sampler=topselect.TopologicalSampler(
            optuna.samplers.TPESampler(seed=SEED, n_startup_trials=3), weight=0.5
        ),
        pruner=topselect.TopologicalPruner(
            optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
            min_class_members=2,
            warmup_steps=2,
        ),
    )
    decisions = {}
    for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        pruned = study.pruner.prune(study, trial)
        stored = study.get_trials(deepcopy=False)[trial.number]
        decisions[str(trial.number)] = [pruned, stored.user_attrs.get("topselect.prune_reason")]
    trial = study.ask()
    params = {
        "x": trial.suggest_float("x", -3.0, 3.0),
        "n": trial.suggest_int("n", 1, 8),
        "kind": trial.suggest_categorical("kind", ["a", "b", "c"]),
    }
    return {"prune": decisions, "params": params, "trial": trial.number}


COMMANDS = {"optimize": optimize, "decide": decide}


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    command, argument = sys.argv[1], json.loads(sys.argv[2])
    result = COMMANDS[command](argument)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
