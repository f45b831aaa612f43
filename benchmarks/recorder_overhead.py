"""Training time with and without the trajectory recorder, side by side in one process.

Two workloads at the recorder's default settings (nine waypoints, 32-dimensional
sketches), with ``TrajectoryRecorder.update`` called after every optimizer step:

- ``digits-mlp``: ``topselect.demo.build_model(64, 10, 64, 2, seed=0)``, a 64-64-64-10
  ReLU MLP (8,970 parameters), Adam at 1e-3, batch 32, 30 epochs on scikit-learn's digits.
- ``mnist1d-cnn``: the 3,018-parameter 1-D CNN of ``probe_cases.build_cnn``, Adam at 1e-2,
  batch 32, 20 epochs on 4,000 MNIST-1D examples.

Three variants are timed per repeat, in rotating order so that drifts in machine load
hit each alike. They are training without a recorder, with the recorder, and with the
recorder plus its end-of-training summary (path statistics, principal components, and
the probe-set loss at every waypoint on 512 examples).

Overhead is measured two ways. Within each run, the time spent inside recorder calls
(``update`` and the summary) is divided by the rest of that run's time. This is robust to
load from other processes, because such load slows both parts alike. Between runs, the
median time of each variant is divided by the median time without a recorder. On a
shared machine that difference is often smaller than the run-to-run noise. Results go to
``benchmarks/results/recorder_overhead.json``.

Usage: ``python benchmarks/recorder_overhead.py --repeats 5``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from probe_cases import build_cnn
from torch import nn

import topselect
from topselect.datasets import DataSplit, load_digits_split, load_mnist1d_split
from topselect.demo import build_model
from topselect.trajectory import TrajectoryRecorder, waypoint_losses

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 0
BATCH_SIZE = 32
VARIANTS = ("without", "recorder", "recorder_and_summary")

_logger = logging.getLogger("recorder_overhead")


def _workloads() -> dict[str, tuple[Callable[[], nn.Module], DataSplit, float, int]]:
    digits = load_digits_split(seed=SEED)
    mnist1d = load_mnist1d_split(seed=SEED)
    return {
        "digits-mlp": (lambda: build_model(64, 10, 64, 2, seed=SEED), digits, 1e-3, 30),
        "mnist1d-cnn": (lambda: build_cnn(SEED), mnist1d, 1e-2, 20),
    }


def train_once(
    build: Callable[[], nn.Module],
    data: DataSplit,
    lr: float,
    epochs: int,
    variant: str,
    probe: topselect.ProbeSet,
) -> tuple[float, float, int]:
    """Train one model and return its wall time, the part spent in the recorder (both in
    seconds) and the number of waypoints recorded."""
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(SEED)
    n = len(data.x_train)
    total = epochs * -(-n // BATCH_SIZE)
    started = time.perf_counter()
    recorder = TrajectoryRecorder(model) if variant != "without" else None
    in_recorder = time.perf_counter() - started
    step = 0
    for _ in range(epochs):
        for index in torch.randperm(n, generator=order).split(BATCH_SIZE):
            optimizer.zero_grad()
            F.cross_entropy(model(data.x_train[index]), data.y_train[index]).backward()
            optimizer.step()
            step += 1
            if recorder is not None:
                before = time.perf_counter()
                recorder.update(step / total)
                in_recorder += time.perf_counter() - before
    if recorder is not None and variant == "recorder_and_summary":
        before = time.perf_counter()
        losses = waypoint_losses(model, F.cross_entropy, probe, recorder.waypoints)
        recorder.summary(list(losses))
        in_recorder += time.perf_counter() - before
    seconds = time.perf_counter() - started
    if recorder is None:
        return seconds, 0.0, 0
    return seconds, in_recorder, len(recorder.waypoints)


def measure(name: str, repeats: int) -> dict:
    build, data, lr, epochs = _workloads()[name]
    probe = topselect.make_probe_set(data.x_train, data.y_train, size=512, seed=SEED)
    train_once(build, data, lr, 1, "recorder_and_summary", probe)  # Warm-up, untimed.
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    # Share of each run's training time spent inside the recorder, measured in that run.
    shares: dict[str, list[float]] = {variant: [] for variant in VARIANTS[1:]}
    for repeat in range(repeats):
        rotation = VARIANTS[repeat % 3 :] + VARIANTS[: repeat % 3]
        for variant in rotation:
            seconds, in_recorder, waypoints = train_once(build, data, lr, epochs, variant, probe)
            times[variant].append(seconds)
            if variant in shares:
                shares[variant].append(100 * in_recorder / (seconds - in_recorder))
            _logger.info(
                "%s %s: %.3f s, %.4f s in the recorder (%d waypoints)",
                name,
                variant,
                seconds,
                in_recorder,
                waypoints,
            )
    medians = {variant: statistics.median(values) for variant, values in times.items()}
    return {
        "workload": name,
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "n_parameters": sum(p.numel() for p in build().parameters()),
        "times": times,
        "median_seconds": medians,
        "in_run_overhead_percent": shares,
        "in_run_overhead_percent_median": {
            variant: statistics.median(values) for variant, values in shares.items()
        },
        "overhead_percent": {
            variant: 100 * (medians[variant] / medians["without"] - 1) for variant in VARIANTS[1:]
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS / "recorder_overhead.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    document = {
        "machine": {
            "date": date.today().isoformat(),
            "commit": commit,
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "load_average_start": os.getloadavg(),
        },
        "results": [measure(name, args.repeats) for name in ("digits-mlp", "mnist1d-cnn")],
    }
    document["machine"]["load_average_end"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1))
    for result in document["results"]:
        _logger.info(
            "%s overhead within runs: %s; between runs: %s",
            result["workload"],
            result["in_run_overhead_percent_median"],
            result["overhead_percent"],
        )


if __name__ == "__main__":
    main()
