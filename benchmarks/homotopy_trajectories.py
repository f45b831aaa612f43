"""Train and cache the trajectories that the homotopy benchmarks compare.

For each data set, ``N`` small MLPs are trained from one shared initialization. Each run
draws its optimizer (SGD, SGD with momentum 0.9, Adam), learning rate (log-uniform in a
range per optimizer), batch size (16, 32, 64 or 128) and data-order seed from one seeded
generator. Each run
records the default nine waypoints with ``TrajectoryRecorder`` and stores its final
probe-set loss, validation and test accuracy. Everything is written once to
``benchmarks/.cache/homotopy/<dataset>.safetensors`` (waypoints) and ``<dataset>.json``
(runs), and later calls load the cache.

Usage: ``python benchmarks/homotopy_trajectories.py --runs 200`` trains and caches both
data sets.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import topselect
from topselect.datasets import DataSplit, load_digits_split, load_mnist1d_split
from topselect.trajectory import TrajectoryRecorder

CACHE = Path(__file__).resolve().parent / ".cache" / "homotopy"
PROBE_SIZE = 512
SEED = 0
SKETCH_DIM = 32
#: Epochs per run: enough for most runs at mid-range learning rates to fit their
#: training set; small learning rates leave some runs underfit on purpose.
EPOCHS = {"digits": 40, "mnist1d": 60}
#: Hidden width of the two-hidden-layer MLP of each data set.
WIDTH = {"digits": 64, "mnist1d": 128}
#: Learning-rate range (log-uniform) per optimizer.
LR_RANGE = {"sgd": (0.05, 0.5), "momentum": (0.005, 0.1), "adam": (5e-4, 1e-2)}
BATCH_SIZES = (16, 32, 64, 128)

_logger = logging.getLogger("homotopy_trajectories")


@dataclass(frozen=True)
class RunConfig:
    """Hyperparameters of one run."""

    index: int
    optimizer: str
    lr: float
    batch_size: int
    order_seed: int


@dataclass
class Run:
    """A trained run: its configuration, its outcome and its waypoints."""

    config: RunConfig
    train_loss: float
    val_accuracy: float
    test_accuracy: float
    seconds: float
    waypoints: dict[float, torch.Tensor]
    sketches: dict[float, np.ndarray]


@dataclass
class TrajectorySet:
    """The cached runs of one data set, with what is needed to test them."""

    dataset: str
    data: DataSplit
    probe: topselect.ProbeSet
    runs: list[Run]

    def model(self) -> nn.Module:
        """Return the shared initialization (any model of the architecture will do)."""
        return build_mlp(self.dataset, self.data)


def load_data(dataset: str) -> DataSplit:
    """Return the split of ``dataset`` (``"digits"`` or ``"mnist1d"``)."""
    if dataset == "digits":
        return load_digits_split(seed=SEED)
    if dataset == "mnist1d":
        return load_mnist1d_split(seed=SEED)
    raise ValueError(f"unknown dataset {dataset!r}")


def build_mlp(dataset: str, data: DataSplit) -> nn.Module:
    """Return the shared initialization of ``dataset``'s MLP (seeded, identical every call)."""
    n_inputs = int(np.prod(data.x_train.shape[1:]))
    width = WIDTH[dataset]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_inputs, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, data.n_classes),
        )


def draw_configs(n: int, seed: int = SEED) -> list[RunConfig]:
    """Return ``n`` seeded hyperparameter draws; the first ``m`` are the same for any ``n``."""
    rng = np.random.default_rng(seed)
    configs = []
    for index in range(n):
        optimizer = ["sgd", "momentum", "adam"][int(rng.integers(3))]
        low, high = LR_RANGE[optimizer]
        lr = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        batch_size = int(BATCH_SIZES[int(rng.integers(len(BATCH_SIZES)))])
        configs.append(RunConfig(index, optimizer, lr, batch_size, int(rng.integers(2**31))))
    return configs


def make_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Return the optimizer of ``config`` over ``model``'s parameters."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    momentum = 0.9 if config.optimizer == "momentum" else 0.0
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=momentum)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Return the fraction of ``x`` that ``model`` classifies as ``y`` (eval mode)."""
    model.eval()
    with torch.no_grad():
        value = float((model(x).argmax(dim=1) == y).float().mean())
    model.train()
    return value


def train_run(
    dataset: str,
    data: DataSplit,
    probe: topselect.ProbeSet,
    config: RunConfig,
    epochs: int,
    *,
    record: bool = True,
) -> Run:
    """Train one run from the shared initialization and record its trajectory.

    Progress is reported after every optimizer step, as a training loop that calls
    ``TrajectoryRecorder.update`` each step would.
    """
    model = build_mlp(dataset, data)
    optimizer = make_optimizer(config, model)
    order = torch.Generator().manual_seed(config.order_seed)
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = epochs * steps_per_epoch
    started = time.perf_counter()
    recorder = (
        TrajectoryRecorder(model, sketch_dim=SKETCH_DIM, sketch_seed=SEED) if record else None
    )
    step = 0
    for _ in range(epochs):
        for index in torch.randperm(n, generator=order).split(config.batch_size):
            optimizer.zero_grad()
            F.cross_entropy(model(data.x_train[index]), data.y_train[index]).backward()
            optimizer.step()
            step += 1
            if recorder is not None:
                recorder.update(step / total)
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        train_loss = float(F.cross_entropy(model(probe.inputs), probe.targets))
    return Run(
        config=config,
        train_loss=train_loss,
        val_accuracy=accuracy(model, data.x_val, data.y_val),
        test_accuracy=accuracy(model, data.x_test, data.y_test),
        seconds=seconds,
        waypoints=dict(recorder.waypoints) if recorder is not None else {},
        sketches=dict(recorder.sketches) if recorder is not None else {},
    )


def _paths(dataset: str) -> tuple[Path, Path]:
    return CACHE / f"{dataset}.safetensors", CACHE / f"{dataset}.json"


def save_runs(dataset: str, runs: list[Run]) -> None:
    """Write the runs' waypoints (safetensors) and outcomes (JSON) to the cache."""
    from safetensors.torch import save_file

    tensors_path, json_path = _paths(dataset)
    CACHE.mkdir(parents=True, exist_ok=True)
    fractions = sorted(runs[0].waypoints)
    tensors = {
        "waypoints": torch.stack(
            [torch.stack([run.waypoints[f] for f in fractions]) for run in runs]
        ).contiguous(),
        "fractions": torch.tensor(fractions, dtype=torch.float64),
    }
    save_file(tensors, str(tensors_path))
    document = {
        "dataset": dataset,
        "epochs": EPOCHS[dataset],
        "width": WIDTH[dataset],
        "probe_size": PROBE_SIZE,
        "runs": [
            {
                **asdict(run.config),
                "train_loss": run.train_loss,
                "val_accuracy": run.val_accuracy,
                "test_accuracy": run.test_accuracy,
                "seconds": run.seconds,
                "sketches": {f"{f:g}": run.sketches[f].tolist() for f in fractions},
            }
            for run in runs
        ],
    }
    json_path.write_text(json.dumps(document))


def load_trajectories(dataset: str, n: int | None = None) -> TrajectorySet:
    """Return the cached runs of ``dataset`` (the first ``n`` of them).

    Raises:
        FileNotFoundError: When the cache is missing; run this script first.
    """
    from safetensors.torch import load_file

    tensors_path, json_path = _paths(dataset)
    if not tensors_path.exists():
        raise FileNotFoundError(
            f"{tensors_path} is missing: run python benchmarks/homotopy_trajectories.py first."
        )
    data = load_data(dataset)
    probe = topselect.make_probe_set(data.x_train, data.y_train, size=PROBE_SIZE, seed=SEED)
    tensors = load_file(str(tensors_path))
    document = json.loads(json_path.read_text())
    fractions = [float(f) for f in tensors["fractions"].tolist()]
    runs = []
    for i, entry in enumerate(document["runs"][:n]):
        sketches = {float(f): np.asarray(v) for f, v in entry.pop("sketches").items()}
        outcome = {
            k: entry.pop(k) for k in ("train_loss", "val_accuracy", "test_accuracy", "seconds")
        }
        runs.append(
            Run(
                config=RunConfig(**entry),
                waypoints={f: tensors["waypoints"][i, t] for t, f in enumerate(fractions)},
                sketches=sketches,
                **outcome,
            )
        )
    return TrajectorySet(dataset, data, probe, runs)


def train_all(dataset: str, n: int) -> None:
    """Train ``n`` runs of ``dataset`` and cache them."""
    data = load_data(dataset)
    probe = topselect.make_probe_set(data.x_train, data.y_train, size=PROBE_SIZE, seed=SEED)
    runs = []
    started = time.perf_counter()
    for config in draw_configs(n):
        runs.append(train_run(dataset, data, probe, config, EPOCHS[dataset]))
        if (config.index + 1) % 25 == 0:
            _logger.info(
                "%s: %d/%d runs trained in %.0f s",
                dataset,
                config.index + 1,
                n,
                time.perf_counter() - started,
            )
    save_runs(dataset, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per data set")
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 trains fastest per core)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    for dataset in args.datasets:
        train_all(dataset, args.runs)


if __name__ == "__main__":
    main()
