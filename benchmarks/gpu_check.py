"""Time the landscape probe on a CUDA device and check its losses against the CPU's.

Run: python benchmarks/gpu_check.py [--grid-size 31] [--repeats 3]

Uses the workloads of ``probe_cases.py`` (two digits MLPs and a MNIST-1D CNN, trained on
the CPU, 512-example probe sets). When ``torch.cuda.is_available()`` is false it runs on
the CPU instead and prints a notice. The grid then defaults to 15 x 15, so the script
ends in under a minute on two cores.

1. Throughput: ``probe_landscape`` with the loop, with vmap and the stacked engine (MLPs
   only) at chunk sizes 64, 256 and the size derived from the default memory budget, and
   with ``auto`` under bfloat16 autocast; one untimed 5 x 5 warm-up each, median of
   ``--repeats``. The table shows grid points
   per second and forward GFLOP/s (2 x the multiply-accumulates of the Linear and Conv1d
   layers, as in probe_engine.py).
2. Agreement: a 9 x 9 slice of each workload on the device, with each float32 setting,
   against the CPU loop. With TF32 off for CUDA matmuls and cuDNN convolutions, every loss
   must match to 1e-4 relative, or the script exits with status 1. On CUDA the largest
   difference with PyTorch's default precision (cuDNN convolutions in TF32) is also
   printed, for information only.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from probe_cases import Workload, load_workloads

import topselect
from topselect.landscape._engine import DEFAULT_MEMORY_BUDGET

# (strategy, chunk_size) pairs; a chunk of None is derived from the memory budget. The loop
# evaluates one grid point per pass and ignores the chunk.
SETTINGS = (
    ("loop", None),
    ("vmap", 64),
    ("vmap", 256),
    ("vmap", None),
    ("stacked", 64),
    ("stacked", 256),
    ("stacked", None),
)
# Timed only: bfloat16 results are not expected to match float32 to the tolerance.
MIXED_PRECISION = ("auto", None, torch.bfloat16)
CHECK_GRID_SIZE = 9
EXPLICIT_CHUNK_BUDGET = 16 * 2**30
RELATIVE_TOLERANCE = 1e-4


def main() -> int:
    args = parse_arguments()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    grid_size = args.grid_size or (31 if device.type == "cuda" else 15)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    else:
        print(f"CUDA is not available; running on the CPU ({torch.get_num_threads()} threads).")

    workloads = load_workloads()
    print(f"\n{grid_size} x {grid_size} grid, median of {args.repeats}")
    print("| workload | strategy | chunk | median (s) | points/s | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for workload in workloads:
        time_settings(workload, device, grid_size, args.repeats)

    print(f"\nagreement with the CPU loop on a {CHECK_GRID_SIZE} x {CHECK_GRID_SIZE} grid")
    print("| workload | strategy | chunk | max relative difference | within tolerance |")
    print("|---|---|---|---|---|")
    failures = sum(check_agreement(workload, device) for workload in workloads)
    if failures:
        print(
            f"\nFAILED: {failures} settings differ from the CPU by more than "
            f"{RELATIVE_TOLERANCE:g} relative."
        )
        return 1
    print(f"\nAll settings agree with the CPU to {RELATIVE_TOLERANCE:g} relative.")
    return 0


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--grid-size",
        type=int,
        default=None,
        help="points per axis of the timed slices (default: 31 on CUDA, 15 on the CPU)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting")
    return parser.parse_args()


def probe_values(
    model: torch.nn.Module,
    workload: Workload,
    grid_size: int,
    strategy: str,
    chunk_size: int | None,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    result = topselect.probe_landscape(
        model,
        F.cross_entropy,
        workload.probe,
        grid_size=grid_size,
        strategy=strategy,
        chunk_size=chunk_size,
        # An explicit chunk is timed as given, so it gets room beyond the default budget.
        memory_budget=DEFAULT_MEMORY_BUDGET if chunk_size is None else EXPLICIT_CHUNK_BUDGET,
        autocast_dtype=autocast_dtype,
    )
    return result.values


def settings_for(workload: Workload) -> list[tuple[str, int | None]]:
    """Return the settings that apply: the stacked engine takes only plain MLPs."""
    from topselect.landscape._engine import stack_steps

    stackable = stack_steps(workload.model) is not None
    return [(s, c) for s, c in SETTINGS if s != "stacked" or stackable]


def chunk_label(strategy: str, chunk_size: int | None) -> str:
    if strategy == "loop":
        return "-"
    return "budget" if chunk_size is None else str(chunk_size)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_settings(workload: Workload, device: torch.device, grid_size: int, repeats: int) -> None:
    model = copy.deepcopy(workload.model).to(device)
    flops = workload.flops_per_example * len(workload.probe) * grid_size**2
    timed = [(s, c, None) for s, c in settings_for(workload)] + [MIXED_PRECISION]
    for strategy, chunk_size, autocast_dtype in timed:
        # Untimed warm-up.
        probe_values(model, workload, 5, strategy, chunk_size, autocast_dtype)
        seconds = []
        for _ in range(repeats):
            synchronize(device)
            started = time.perf_counter()
            probe_values(model, workload, grid_size, strategy, chunk_size, autocast_dtype)
            synchronize(device)
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        label = strategy if autocast_dtype is None else f"{strategy}, {autocast_dtype}"
        print(
            f"| {workload.name} | {label} | {chunk_label(strategy, chunk_size)} "
            f"| {median:.3f} | {grid_size**2 / median:.0f} | {flops / median / 1e9:.1f} |"
        )


@contextmanager
def ieee_float32() -> Iterator[None]:
    """Turn TF32 off for CUDA matmuls and cuDNN convolutions inside the block."""
    matmul = torch.backends.cuda.matmul
    conv = getattr(torch.backends.cudnn, "conv", None)
    # torch 2.13 has the fp32_precision settings, but older releases only the allow_tf32 flags.
    if conv is not None and hasattr(conv, "fp32_precision"):
        saved = (matmul.fp32_precision, conv.fp32_precision)
        matmul.fp32_precision = conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = saved
        return
    saved_flags = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_flags


def relative_difference(values: np.ndarray, reference: np.ndarray) -> float:
    scale = np.maximum(np.abs(reference), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(values - reference) / scale))


def check_agreement(workload: Workload, device: torch.device) -> int:
    """Print how far each device setting is from the CPU loop, and return the number of
    settings that fail."""
    model = copy.deepcopy(workload.model).to(device)
    reference = probe_values(workload.model, workload, CHECK_GRID_SIZE, "loop", None)
    failures = 0
    for strategy, chunk_size in settings_for(workload):
        with ieee_float32():
            values = probe_values(model, workload, CHECK_GRID_SIZE, strategy, chunk_size)
        difference = relative_difference(values, reference)
        passed = difference <= RELATIVE_TOLERANCE
        failures += not passed
        chunk = chunk_label(strategy, chunk_size)
        line = f"| {workload.name} | {strategy} | {chunk} | {difference:.1e} | {passed} |"
        if device.type == "cuda":
            default = probe_values(model, workload, CHECK_GRID_SIZE, strategy, chunk_size)
            line += f" default precision: {relative_difference(default, reference):.1e}"
        print(line)
    return failures


if __name__ == "__main__":
    sys.exit(main())
