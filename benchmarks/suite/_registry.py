"""The registry of named benchmarks that ``python -m benchmarks`` runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Benchmark", "BENCHMARKS", "get"]

RunFn = Callable[..., dict[str, Any]]
RenderFn = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark.

    Attributes:
        name: Name given to ``python -m benchmarks run``.
        title: Heading of its BENCHMARKS.md section.
        summary: One line for ``python -m benchmarks list``.
        module: Module with ``run(*, quick, seed)`` and ``render(result)`` for suite
            benchmarks, or ``None`` for a standalone script.
        script: File name under ``benchmarks/`` for a standalone script, run unchanged
            in a subprocess with any extra arguments; it writes its own results.
    """

    name: str
    title: str
    summary: str
    module: str | None = None
    script: str | None = None

    @property
    def has_quick(self) -> bool:
        """Whether the benchmark has a ``--quick`` size (standalone scripts have none)."""
        return self.module is not None

    def functions(self) -> tuple[RunFn, RenderFn]:
        """Import the module and return its ``run`` and ``render`` functions."""
        import importlib

        assert self.module is not None, "standalone scripts have no run function"
        module = importlib.import_module(self.module)
        return module.run, module.render


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "predictiveness",
            "Predictiveness of flatness scores and baselines",
            "Kendall tau, granulated Psi and R^2 of every score against test accuracy",
            module="benchmarks.suite.predictiveness",
        ),
        Benchmark(
            "selection",
            "Selection: topselect's top trial against Optuna's best",
            "test accuracy of the selected trial over study seeds, with a bootstrap interval",
            module="benchmarks.suite.selection",
        ),
        Benchmark(
            "pruning",
            "Pruning: epochs spent and accuracy reached",
            "TopologicalPruner against Optuna's pruners at equal trial budgets",
            module="benchmarks.suite.pruning",
        ),
        Benchmark(
            "homotopy",
            "Homotopy classes: summary",
            "summary of the homotopy spread results and the commands behind them",
            module="benchmarks.suite.homotopy",
        ),
        Benchmark(
            "probe_engine",
            "Landscape probe against the matmul rate",
            "standalone script: probe throughput against the dense matmul rate",
            script="probe_engine.py",
        ),
        Benchmark(
            "compare_scale",
            "compare on a large experiment",
            "standalone script: `topselect compare` on 5,000 MLflow runs",
            script="compare_scale.py",
        ),
        Benchmark(
            "recorder_overhead",
            "Recorder overhead during training",
            "standalone script: training time with and without the trajectory recorder",
            script="recorder_overhead.py",
        ),
        Benchmark(
            "homotopy_trajectories",
            "Homotopy classes: trajectories",
            "standalone script: train and cache the trajectories of the homotopy benchmarks",
            script="homotopy_trajectories.py",
        ),
        Benchmark(
            "homotopy_scaling",
            "Homotopy classes: cost and agreement",
            "standalone script: representative classes against all-pairs classes",
            script="homotopy_scaling.py",
        ),
        Benchmark(
            "homotopy_spread",
            "Homotopy classes: accuracy spread",
            "standalone script: test-accuracy spread within and across classes",
            script="homotopy_spread.py",
        ),
        Benchmark(
            "transfer",
            "Pullback transfer against fine-tuning",
            "standalone script: pullback transfer against fine-tuning, scratch training and "
            "linear-probe-then-fine-tune",
            script="transfer.py",
        ),
    )
}


def get(name: str) -> Benchmark:
    """Return the benchmark called ``name``.

    Raises:
        KeyError: With the known names, when ``name`` is not registered.
    """
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(
            f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}."
        ) from None
