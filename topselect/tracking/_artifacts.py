"""JSON encodings of topselect's artifacts."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from topselect.landscape import LandscapeResult

__all__ = ["diagram_from_json", "diagram_to_json"]


def _pairs(bars: np.ndarray) -> list[list[float | None]]:
    return [[float(b), float(d) if math.isfinite(d) else None] for b, d in bars]


def diagram_to_json(result: LandscapeResult) -> dict[str, Any]:
    """Encode a slice's persistence diagrams as standard JSON (``diagram.json``).

    Each diagram is a list of ``[birth, death]`` pairs in loss units. An infinite death
    (the essential H0 class) is written as ``null``, as ``"infinite_death"`` states, so
    the file holds only finite numbers.
    """
    from topselect.tracking._writer import SCHEMA_VERSION

    d = result.diagrams
    return {
        "schema_version": SCHEMA_VERSION,
        "infinite_death": "null",
        "filtration": "sublevel, 8-connected grid (T-construction)",
        "h0": _pairs(d.h0),
        "h1": _pairs(d.h1),
        "n_nonfinite": d.n_nonfinite,
        "fill_value": d.fill_value,
        "value_range": list(d.value_range),
        "grid_size": len(result.axis),
        "radius": float(result.axis[-1]),
        "seed": result.seed,
        "probe_fingerprint": result.probe_fingerprint,
    }


def diagram_from_json(data: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """Decode ``diagram.json`` back to ``{"h0": [...], "h1": [...]}`` with ``inf`` deaths."""
    return {
        key: [(float(b), math.inf if d is None else float(d)) for b, d in data.get(key, [])]
        for key in ("h0", "h1")
    }
