"""The machine, software and timing facts recorded with every benchmark result."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "RunClock", "describe_machine", "git_commit", "package_versions"]

#: Distributions whose versions are recorded with every result.
PACKAGES = (
    "topselect",
    "torch",
    "optuna",
    "mlflow",
    "numpy",
    "scipy",
    "scikit-learn",
    "mnist1d",
    "ripser",
    "persim",
)

REPOSITORY = Path(__file__).resolve().parents[2]


def package_versions() -> dict[str, str | None]:
    """Return the installed version of each distribution in :data:`PACKAGES`."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> dict[str, Any]:
    """Return the checked-out commit and whether tracked files differ from it."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPOSITORY, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": None if status is None else bool(status),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def describe_machine(torch_threads: int) -> dict[str, Any]:
    """Return the CPU model, core counts, memory, platform and torch thread count."""
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch_threads": torch_threads,
    }


@dataclass
class RunClock:
    """Wall time and load averages (1, 5 and 15 minutes) at the start and end of a run."""

    started_utc: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )
    load_average_start: tuple[float, ...] = field(default_factory=os.getloadavg)
    _start: float = field(default_factory=time.perf_counter)

    def stop(self) -> dict[str, Any]:
        """Return the timing record: start date, wall seconds and both load averages."""
        return {
            "started_utc": self.started_utc,
            "wall_seconds": round(time.perf_counter() - self._start, 2),
            "load_average_start": [round(v, 2) for v in self.load_average_start],
            "load_average_end": [round(v, 2) for v in os.getloadavg()],
        }
