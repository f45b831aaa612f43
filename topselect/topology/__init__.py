"""Sublevel persistence of landscape slices and the flatness scores read off it."""

from topselect.topology._persistence import Diagrams, sublevel_persistence
from topselect.topology._scores import (
    DEFAULT_BASIN_LEVELS,
    basin_key,
    basin_profile,
    flatness_scores,
    persistence_entropy,
    total_persistence,
)

__all__ = [
    "DEFAULT_BASIN_LEVELS",
    "Diagrams",
    "basin_key",
    "basin_profile",
    "flatness_scores",
    "persistence_entropy",
    "sublevel_persistence",
    "total_persistence",
]
