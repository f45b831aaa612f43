"""Optuna integration: the sampler, the pruner, the trial tracker and the ranking."""

from topselect.search._classes import study_classes
from topselect.search._pruner import TopologicalPruner
from topselect.search._ranking import (
    DEFAULT_SCORE,
    DEFAULT_WEIGHT,
    RankedTrial,
    TrialRecord,
    adjusted_value,
    rank_records,
    rank_trials,
)
from topselect.search._sampler import TopologicalSampler
from topselect.search._tracker import TrackerConfig, TrialTracker, track

__all__ = [
    "DEFAULT_SCORE",
    "DEFAULT_WEIGHT",
    "RankedTrial",
    "TopologicalPruner",
    "TopologicalSampler",
    "TrackerConfig",
    "TrialRecord",
    "TrialTracker",
    "adjusted_value",
    "rank_records",
    "rank_trials",
    "study_classes",
    "track",
]
