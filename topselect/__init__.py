"""topselect: topology-aware model selection for Optuna searches of PyTorch models.

Public names are imported on first use, so ``import topselect`` and the CLI's ``--help``
stay fast without loading torch, Optuna or MLflow.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from topselect.exceptions import (
    ExperimentNotFoundError,
    IncompatibleVersionError,
    InvalidInputError,
    TopselectError,
    TrackingError,
)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "TopologicalSampler": "topselect.search",
    "TopologicalPruner": "topselect.search",
    "TrackerConfig": "topselect.search",
    "track": "topselect.search",
    "rank_trials": "topselect.search",
    "probe_landscape": "topselect.landscape",
    "probe_subspace": "topselect.landscape",
    "make_probe_set": "topselect.landscape",
    "ProbeSet": "topselect.landscape",
    "sublevel_persistence": "topselect.topology",
    "loss_barrier": "topselect.homotopy",
    "StudyLogger": "topselect.tracking",
}

__all__ = [
    "ExperimentNotFoundError",
    "IncompatibleVersionError",
    "InvalidInputError",
    "ProbeSet",
    "StudyLogger",
    "TopologicalPruner",
    "TopologicalSampler",
    "TopselectError",
    "TrackerConfig",
    "TrackingError",
    "loss_barrier",
    "make_probe_set",
    "probe_landscape",
    "probe_subspace",
    "rank_trials",
    "sublevel_persistence",
    "track",
]

if TYPE_CHECKING:
    from topselect.homotopy import loss_barrier
    from topselect.landscape import ProbeSet, make_probe_set, probe_landscape, probe_subspace
    from topselect.search import (
        TopologicalPruner,
        TopologicalSampler,
        TrackerConfig,
        rank_trials,
        track,
    )
    from topselect.topology import sublevel_persistence
    from topselect.tracking import StudyLogger


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'topselect' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
