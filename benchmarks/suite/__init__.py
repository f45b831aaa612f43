"""The benchmark suite behind ``python -m benchmarks``: registry, runner and statistics."""

from benchmarks.suite._registry import BENCHMARKS, Benchmark, get
from benchmarks.suite._runner import RunOptions, run_benchmark

__all__ = ["BENCHMARKS", "Benchmark", "RunOptions", "get", "run_benchmark"]
