"""Sublevel persistence of landscape slices, flatness scores, and diagram utilities.

The utilities (distances, persistence images and landscapes) treat essential bars and
empty diagrams explicitly, where persim drops, rejects or returns NaN for them.
"""

from topselect.topology._distances import diagram_distance, diagram_distance_matrix
from topselect.topology._persistence import (
    Diagrams,
    graph_sublevel_persistence,
    sublevel_persistence,
)
from topselect.topology._scores import (
    DEFAULT_BASIN_LEVELS,
    basin_key,
    basin_profile,
    flatness_scores,
    persistence_entropy,
    total_persistence,
)
from topselect.topology._vectors import (
    PersistenceImage,
    persistence_image,
    persistence_landscape,
)

__all__ = [
    "DEFAULT_BASIN_LEVELS",
    "Diagrams",
    "PersistenceImage",
    "basin_key",
    "basin_profile",
    "diagram_distance",
    "diagram_distance_matrix",
    "graph_sublevel_persistence",
    "flatness_scores",
    "persistence_entropy",
    "persistence_image",
    "persistence_landscape",
    "sublevel_persistence",
    "total_persistence",
]
