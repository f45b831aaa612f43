"""Rendering a ranking as a table, JSON, or CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from topselect.search._ranking import RankedTrial

__all__ = ["COMPARE_SCHEMA_VERSION", "render"]

#: Version of the ``topselect compare --format json`` document.
COMPARE_SCHEMA_VERSION = 1

_SCORE_COLUMNS = ("tp_h0", "tp_h1", "center_loss")


def _columns(score: str, extra_keys: Sequence[str]) -> list[str]:
    return [
        "rank", "trial", "state", "value", "adjusted", score, *_SCORE_COLUMNS,
        "class", "fitted", *extra_keys,
    ]  # fmt: skip


def _row(entry: RankedTrial, score: str, extra_keys: Sequence[str]) -> list[Any]:
    r = entry.record
    return [
        entry.rank,
        r.number,
        r.state,
        r.value if r.state == "COMPLETE" else entry.ranked_value,
        entry.adjusted_value,
        r.scores.get(score),
        *(r.scores.get(k) for k in _SCORE_COLUMNS),
        r.class_id,
        r.fitted,
        *(r.extra.get(k) for k in extra_keys),
    ]


def _extra_keys(ranking: Sequence[RankedTrial]) -> list[str]:
    keys: set[str] = set()
    for entry in ranking:
        keys.update(k for k, v in entry.record.extra.items() if isinstance(v, int | float))
    return sorted(keys)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def render(
    ranking: Sequence[RankedTrial],
    fmt: str,
    *,
    score: str,
    header: dict[str, Any],
) -> str:
    """Render a ranking.

    Args:
        ranking: Entries from ``rank_records`` or ``rank_trials``.
        fmt: ``"table"`` (aligned text), ``"json"`` (one document, see docs/cli.md) or
            ``"csv"`` (one header row, then one row per trial).
        score: Name of the flatness score shown in its own column.
        header: Study-level fields placed at the top of the JSON document.
    """
    extra_keys = _extra_keys(ranking)
    if fmt == "json":
        document = {
            "schema_version": COMPARE_SCHEMA_VERSION,
            **header,
            "trials": [entry.to_dict() for entry in ranking],
        }
        return json.dumps(document, indent=2, allow_nan=False)
    columns = _columns(score, extra_keys)
    rows = [_row(entry, score, extra_keys) for entry in ranking]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return buffer.getvalue().rstrip("\n")
    cells = [columns] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
