"""Measure the landscape probe's throughput against this machine's dense matmul rate.

Run: python benchmarks/probe_engine.py [--repeats 3] [--grid-sizes 31,51]
         [--output benchmarks/results/probe_engine.json]

In one process, with one torch thread count throughout:

1. The dense matmul rate: float32 ``torch.mm`` of square matrices of 512, 1024 and 2048,
   best of ``--repeats`` timings per size. The fastest size gives the reference rate.
2. For each workload in ``probe_cases.py`` (a digits MLP and a MNIST-1D CNN, 512-example
   probe sets) and each grid size: the wall time of ``topselect.probe_landscape`` with
   strategies ``loop``, ``vmap``, ``stacked`` (MLPs only) and ``auto``, interleaved, one
   untimed 5 x 5 warm-up per strategy, median of the repeats. The achieved rate is
   forward FLOPs per example x probe size x grid points / wall time, so the whole probe
   (directions, persistence, scores) is charged to the forward passes. The stacked
   engine skips the first layer's per-point products by linearity, so its rate is an
   effective rate: the FLOPs a per-point evaluation would need, divided by wall time.
3. Chunk sizes: vmap and the stacked engine on the digits MLP at the first grid size with
   chunks of 8 to 256 points, interleaved, median of the repeats; this is the
   measurement behind the CPU chunk caps in ``topselect/landscape/_engine.py``.
4. The share of the probe spent in persistence: ``topselect.sublevel_persistence`` timed
   alone on the slice that ``auto`` returned, as a percentage of the ``auto`` probe time.
   The same slice is timed again with ripser forced for both dimensions (no shortcut
   for a single basin), the cost on a slice with several minima.

Forward FLOPs are 2 x the multiply-accumulates of every Linear and Conv1d layer; biases,
ReLU, pooling and the loss are not counted. ``torch.utils.flop_counter`` is run as a
cross-check and both counts go into the JSON. A markdown table goes to stdout and the
results with the machine, date and git commit to ``--output``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from probe_cases import Workload, load_workloads

import topselect
from topselect.topology._persistence import _grid_diagrams

STRATEGIES = ("loop", "vmap", "stacked", "auto")
MATMUL_SIZES = (512, 1024, 2048)
# Each matmul timing multiplies enough matrices to do about this much work.
MATMUL_FLOPS_PER_TIMING = 2 * 2048**3
PERSISTENCE_REPEATS = 20
REPOSITORY = Path(__file__).resolve().parent.parent


def main() -> None:
    args = parse_arguments()
    machine = describe_machine()
    print(
        f"{machine['cpu_model']}, {machine['logical_cores']} logical cores, torch "
        f"{machine['torch_version']} with {machine['torch_threads']} threads, load average "
        f"{machine['load_average_start'][0]:.2f}"
    )
    matmul = measure_matmul(args.repeats)
    best_matmul = max(matmul.values())
    print(f"float32 torch.mm: best {best_matmul:.1f} GFLOP/s ({format_rates(matmul)})")

    workloads = load_workloads()
    for workload in workloads:
        check_flop_counts(workload)
    probes = [
        measure_probe(workload, grid_size, args.repeats, best_matmul)
        for workload in workloads
        for grid_size in args.grid_sizes
    ]
    chunks = measure_chunks(workloads[0], args.grid_sizes[0], args.repeats)
    # A second matmul measurement after the probes shows whether the machine's speed
    # changed during the run (other jobs on a shared machine).
    matmul_after = measure_matmul(args.repeats)
    print(f"float32 torch.mm after the probes: best {max(matmul_after.values()):.1f} GFLOP/s")
    machine["load_average_end"] = list(os.getloadavg())
    print_tables(workloads, probes)

    results = {
        "command": "python benchmarks/probe_engine.py " + " ".join(args.argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine,
        "matmul_gflops": {str(n): rate for n, rate in matmul.items()},
        "matmul_best_gflops": best_matmul,
        "matmul_after_gflops": {str(n): rate for n, rate in matmul_after.items()},
        "workloads": [describe_workload(w) for w in workloads],
        "probes": probes,
        "chunk_sweep": chunks,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nWrote {args.output}")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    parser.add_argument(
        "--grid-sizes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[31, 51],
        help="comma-separated grid sizes (points per axis)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPOSITORY / "benchmarks" / "results" / "probe_engine.json",
        help="path of the JSON results file",
    )
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    return args


def describe_machine() -> dict[str, Any]:
    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_start": list(os.getloadavg()),
    }


def git_commit() -> str:
    """Return the checked-out commit, with ``+dirty`` when tracked files have changes."""

    def git(*command: str) -> str:
        return subprocess.run(
            ["git", *command], cwd=REPOSITORY, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def measure_matmul(repeats: int) -> dict[int, float]:
    """Return the best float32 ``torch.mm`` rate in GFLOP/s for each matrix size."""
    generator = torch.Generator().manual_seed(0)
    rates = {}
    for n in MATMUL_SIZES:
        a = torch.randn(n, n, generator=generator)
        b = torch.randn(n, n, generator=generator)
        torch.mm(a, b)  # Untimed warm-up.
        count = max(1, MATMUL_FLOPS_PER_TIMING // (2 * n**3))
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(count):
                torch.mm(a, b)
            best = min(best, time.perf_counter() - started)
        rates[n] = 2 * n**3 * count / best / 1e9
    return rates


def check_flop_counts(workload: Workload) -> None:
    counted = workload.counter_flops_per_example
    if counted is None:
        print(f"{workload.name}: torch.utils.flop_counter failed; using the analytic count.")
    elif counted != workload.flops_per_example:
        print(
            f"{workload.name}: analytic count {workload.flops_per_example} FLOPs per example "
            f"differs from torch.utils.flop_counter's {counted:.0f}."
        )


def probe(workload: Workload, grid_size: int, strategy: str) -> topselect.LandscapeResult:
    return topselect.probe_landscape(
        workload.model, F.cross_entropy, workload.probe, grid_size=grid_size, strategy=strategy
    )


def measure_probe(
    workload: Workload, grid_size: int, repeats: int, matmul_gflops: float
) -> dict[str, Any]:
    """Time every strategy on one workload and grid, and persistence on its slice."""
    strategies = [s for s in STRATEGIES if s != "stacked" or is_stackable(workload)]
    for strategy in strategies:
        probe(workload, 5, strategy)  # Untimed warm-up: first calls pay for setup.
    times: dict[str, list[float]] = {strategy: [] for strategy in strategies}
    chosen = ""
    for _ in range(repeats):
        for strategy in strategies:
            started = time.perf_counter()
            result = probe(workload, grid_size, strategy)
            times[strategy].append(time.perf_counter() - started)
            if strategy == "auto":
                chosen, values = result.strategy, result.values

    flops = workload.flops_per_example * len(workload.probe) * grid_size**2
    rows: dict[str, dict[str, Any]] = {}
    for strategy, seconds in times.items():
        median = statistics.median(seconds)
        rows[strategy] = {
            "seconds_median": median,
            "seconds": seconds,
            "points_per_second": grid_size**2 / median,
            "gflops": flops / median / 1e9,
            "fraction_of_matmul": flops / median / 1e9 / matmul_gflops,
        }
    persistence = time_persistence(topselect.sublevel_persistence, values)
    # The same slice with ripser forced for both dimensions: the cost on a slice that is
    # not a single basin (several minima, or a peak inside a ring).
    full = time_persistence(functools.partial(_grid_diagrams, shortcuts=False), values)
    return {
        "workload": workload.name,
        "grid_size": grid_size,
        "forward_gflop_per_probe": flops / 1e9,
        "auto_chose": chosen,
        "strategies": rows,
        "persistence_seconds_median": persistence,
        "persistence_share_of_auto": persistence / rows["auto"]["seconds_median"],
        "persistence_without_shortcuts_seconds_median": full,
        "persistence_without_shortcuts_share_of_auto": full / rows["auto"]["seconds_median"],
    }


CHUNK_SIZES = (8, 16, 32, 64, 128, 256)


def measure_chunks(workload: Workload, grid_size: int, repeats: int) -> dict[str, Any]:
    """Time vmap and the stacked engine at several chunk sizes on one workload."""
    settings = [(s, c) for s in ("vmap", "stacked") for c in CHUNK_SIZES]
    seconds: dict[str, list[float]] = {f"{s}:{c}": [] for s, c in settings}
    for _ in range(repeats):
        for strategy, chunk in settings:
            started = time.perf_counter()
            topselect.probe_landscape(
                workload.model,
                F.cross_entropy,
                workload.probe,
                grid_size=grid_size,
                strategy=strategy,
                chunk_size=chunk,
                memory_budget=2**34,
            )
            seconds[f"{strategy}:{chunk}"].append(time.perf_counter() - started)
    print(f"\nchunk sizes, {workload.name}, grid {grid_size}, median of {repeats} (s)")
    print("| chunk | " + " | ".join(str(c) for c in CHUNK_SIZES) + " |")
    print("|---|" + "---|" * len(CHUNK_SIZES))
    for strategy in ("vmap", "stacked"):
        medians = [statistics.median(seconds[f"{strategy}:{c}"]) for c in CHUNK_SIZES]
        print(f"| {strategy} | " + " | ".join(f"{m:.3f}" for m in medians) + " |")
    return {
        "workload": workload.name,
        "grid_size": grid_size,
        "seconds": seconds,
    }


def is_stackable(workload: Workload) -> bool:
    from topselect.landscape._engine import stack_steps

    return stack_steps(workload.model) is not None


def time_persistence(compute: Callable[[Any], Any], values: Any) -> float:
    compute(values)  # Untimed warm-up.
    seconds = []
    for _ in range(PERSISTENCE_REPEATS):
        started = time.perf_counter()
        compute(values)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def describe_workload(workload: Workload) -> dict[str, Any]:
    return {
        "name": workload.name,
        "parameters": workload.n_parameters,
        "probe_size": len(workload.probe),
        "input_shape": list(workload.probe.inputs.shape[1:]),
        "forward_flops_per_example": workload.flops_per_example,
        "flop_counter_flops_per_example": workload.counter_flops_per_example,
    }


def print_tables(workloads: list[Workload], probes: list[dict[str, Any]]) -> None:
    parameters = {w.name: w.n_parameters for w in workloads}
    print()
    print(
        "| workload | parameters | grid | strategy | median (s) | points/s | GFLOP/s "
        "| % of matmul | loop / this |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for entry in probes:
        loop = entry["strategies"]["loop"]["seconds_median"]
        for strategy, row in entry["strategies"].items():
            label = f"auto ({entry['auto_chose']})" if strategy == "auto" else strategy
            print(
                f"| {entry['workload']} | {parameters[entry['workload']]} "
                f"| {entry['grid_size']} | {label} | {row['seconds_median']:.2f} "
                f"| {row['points_per_second']:.0f} | {row['gflops']:.1f} "
                f"| {100 * row['fraction_of_matmul']:.1f} "
                f"| {loop / row['seconds_median']:.2f} |"
            )
    print()
    print(
        "| workload | grid | persistence (ms) | share of the auto probe "
        "| ripser forced (ms) | its share |"
    )
    print("|---|---|---|---|---|---|")
    for entry in probes:
        print(
            f"| {entry['workload']} | {entry['grid_size']} "
            f"| {1000 * entry['persistence_seconds_median']:.2f} "
            f"| {100 * entry['persistence_share_of_auto']:.2f}% "
            f"| {1000 * entry['persistence_without_shortcuts_seconds_median']:.2f} "
            f"| {100 * entry['persistence_without_shortcuts_share_of_auto']:.2f}% |"
        )


def format_rates(rates: dict[int, float]) -> str:
    return ", ".join(f"{n}: {rate:.1f}" for n, rate in rates.items())


if __name__ == "__main__":
    main()
