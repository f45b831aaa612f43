"""Time the sharpness baselines next to a landscape probe on a trained digits MLP.

Run: python benchmarks/baseline_costs.py [--repeats 3] [--grid-size 31] [--device cpu]

The model is a 64-64-10 ReLU MLP trained for 20 epochs with Adam, and every measure uses
the same 512-example probe set. Each measure runs once untimed, then ``--repeats`` times
interleaved with the others; the table reports the median wall time and the last value.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import topselect
from topselect.datasets import load_digits_split
from topselect.demo import build_model
from topselect.landscape import hessian_trace, sam_sharpness, top_hessian_eigenvalue


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 20) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=order).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grid-size", type=int, default=31)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    data = load_digits_split(seed=0)
    model = build_model(data.n_features, data.n_classes, width=64, depth=1, seed=0)
    train(model, data.x_train, data.y_train)
    model.to(args.device)
    probe = topselect.make_probe_set(data.x_train, data.y_train, size=512, seed=0)

    measures: dict[str, Callable[[], float]] = {
        f"probe_landscape (grid {args.grid_size})": lambda: topselect.probe_landscape(
            model, F.cross_entropy, probe, grid_size=args.grid_size
        ).scores["center_loss"],
        "hessian_trace (32 samples)": lambda: hessian_trace(model, F.cross_entropy, probe).value,
        "top_hessian_eigenvalue": lambda: (
            top_hessian_eigenvalue(model, F.cross_entropy, probe).value
        ),
        "sam_sharpness (ASAM)": lambda: sam_sharpness(model, F.cross_entropy, probe).value,
        "sam_sharpness (SAM)": lambda: (
            sam_sharpness(model, F.cross_entropy, probe, adaptive=False).value
        ),
    }
    values = {name: measure() for name, measure in measures.items()}  # Untimed warm-up.
    times: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(args.repeats):
        for name, measure in measures.items():
            started = time.perf_counter()
            values[name] = measure()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)

    cpu = platform.processor() or platform.machine()
    n_parameters = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, {args.device}")
    print(f"64-64-10 MLP, {n_parameters} parameters, probe set of {len(probe)} examples")
    print("| measure | seconds (median) | value |")
    print("|---|---|---|")
    for name in measures:
        print(f"| {name} | {statistics.median(times[name]):.3f} | {values[name]:.4g} |")


if __name__ == "__main__":
    main()
