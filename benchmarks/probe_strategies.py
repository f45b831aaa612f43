"""Time the landscape probe's loop and vmap strategies side by side on digits MLPs.

Run: python benchmarks/probe_strategies.py [--repeats 3] [--grid-size 31]

Each configuration is timed with both strategies interleaved in one process, so the ratio
is robust to load from other processes; the median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import topselect
from topselect.datasets import load_digits_split
from topselect.demo import build_model

SHAPES = [(32, 1), (64, 2), (128, 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grid-size", type=int, default=31)
    args = parser.parse_args()

    data = load_digits_split(seed=0)
    probe = topselect.make_probe_set(data.x_train, data.y_train, size=512, seed=0)
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}")
    print("| width x depth | parameters | loop (s) | vmap (s) | loop / vmap |")
    print("|---|---|---|---|---|")
    for width, depth in SHAPES:
        model = build_model(data.n_features, data.n_classes, width, depth, seed=0)
        times: dict[str, list[float]] = {"loop": [], "vmap": []}
        for strategy in ("loop", "vmap"):  # Untimed warm-up: first calls pay for setup.
            topselect.probe_landscape(
                model, F.cross_entropy, probe, grid_size=5, strategy=strategy
            )
        for _ in range(args.repeats):
            for strategy in ("loop", "vmap"):
                started = time.perf_counter()
                topselect.probe_landscape(
                    model, F.cross_entropy, probe, grid_size=args.grid_size, strategy=strategy
                )
                times[strategy].append(time.perf_counter() - started)
        loop, vmap = (statistics.median(times[s]) for s in ("loop", "vmap"))
        n_params = sum(p.numel() for p in model.parameters())
        print(f"| {width} x {depth} | {n_params} | {loop:.2f} | {vmap:.2f} | {loop / vmap:.2f} |")


if __name__ == "__main__":
    main()
