"""Rendering a comparison as a table, JSON, CSV or Markdown."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from topselect.search._ranking import RankedTrial

if TYPE_CHECKING:
    from topselect.cli._analysis import DistanceMatrix, Equivalence
    from topselect.tracking._reader import ArtifactProblem, RunRow

__all__ = [
    "COMPARE_SCHEMA_VERSION",
    "FORMATS",
    "Report",
    "aligned_table",
    "column_value",
    "render",
    "render_report",
]

#: Version of the ``topselect compare --format json`` document.
COMPARE_SCHEMA_VERSION = 2

FORMATS = ("table", "json", "csv", "markdown")

_SCORE_COLUMNS = ("tp_h0", "tp_h1", "center_loss")


@dataclass
class Report:
    """Everything one ``compare`` prints.

    Attributes:
        header: Study-level fields (experiment, parent run, direction, weight, score).
        ranking: Ranked entries, in the order they are printed.
        score: Flatness score shown in its own column.
        rows: Run metadata by run id (duration, run name, params).
        classes: Class summary rows, or ``None`` when no trial has a class.
        distances: Diagram distance matrices.
        equivalence: Functional equivalence, when requested.
        problems: Artifacts that could not be used.
        notes: Messages about the selection.
    """

    header: dict[str, Any]
    ranking: list[RankedTrial]
    score: str
    rows: Mapping[str, RunRow] = field(default_factory=dict)
    classes: list[dict[str, Any]] | None = None
    distances: list[DistanceMatrix] = field(default_factory=list)
    equivalence: Equivalence | None = None
    problems: list[ArtifactProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _columns(score: str, extra_keys: Sequence[str]) -> list[str]:
    return [
        "rank", "trial", "state", "value", "adjusted", score, *_SCORE_COLUMNS,
        "class", "fitted", "duration_s", *extra_keys, "run",
    ]  # fmt: skip


def column_value(entry: RankedTrial, column: str, score: str, rows: Mapping[str, RunRow]) -> Any:
    """Return the value of one table column for one entry (``None`` when empty)."""
    r = entry.record
    row = rows.get(r.run_id or "")
    # Runs without a trial number (number -1) are shown by their MLflow run name.
    trial: int | str | None = r.number
    if r.number < 0:
        trial = row.run_name if row else None
    fixed: dict[str, Any] = {
        "rank": entry.rank,
        "trial": trial,
        "state": r.state,
        "value": r.value if r.state == "COMPLETE" else entry.ranked_value,
        "adjusted": entry.adjusted_value,
        "class": r.class_id,
        "fitted": r.fitted,
        "duration_s": row.duration if row else None,
        "run": r.run_id,
    }
    if column in fixed:
        return fixed[column]
    if column == score or column in r.scores:
        return r.scores.get(column)
    return r.extra.get(column)


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
    if isinstance(value, float | np.floating):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def aligned_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(columns)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def _short(run_id: str | None) -> str | None:
    return run_id[:12] if run_id else None


def _ranking_table(report: Report, *, short_ids: bool) -> tuple[list[str], list[list[Any]]]:
    extra_keys = _extra_keys(report.ranking)
    columns = _columns(report.score, extra_keys)
    rows = []
    for entry in report.ranking:
        row = [column_value(entry, c, report.score, report.rows) for c in columns]
        if short_ids:
            row[-1] = _short(row[-1])
        rows.append(row)
    return columns, rows


def render(
    ranking: Sequence[RankedTrial],
    fmt: str,
    *,
    score: str,
    header: dict[str, Any],
) -> str:
    """Render a ranking alone (see :func:`render_report`)."""
    return render_report(Report(header=header, ranking=list(ranking), score=score), fmt)


def render_report(report: Report, fmt: str) -> str:
    """Render a comparison.

    Args:
        report: What to print.
        fmt: ``"table"`` (aligned text sections), ``"json"`` (one document, see
            docs/cli.md), ``"csv"`` (the ranking only: one header row, one row per run)
            or ``"markdown"`` (pipe tables under headings).
    """
    if fmt == "json":
        return json.dumps(_document(report), indent=2, allow_nan=False)
    if fmt == "csv":
        columns, rows = _ranking_table(report, short_ids=False)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return buffer.getvalue().rstrip("\n")
    table = _markdown if fmt == "markdown" else aligned_table
    return "\n\n".join(_text_sections(report, table, markdown=fmt == "markdown"))


def _text_sections(report: Report, table, *, markdown: bool) -> list[str]:
    def title(text: str) -> str:
        return f"### {text}" if markdown else text

    columns, rows = _ranking_table(report, short_ids=True)
    sections = [table(columns, rows)]
    if report.classes:
        sections.append(
            title("Classes (spreads in objective units)") + "\n" + table(*_class_table(report))
        )
    for matrix in report.distances:
        heading = (
            f"{matrix.dimension.upper()} {matrix.metric} distances (loss units; inf: the "
            "diagrams differ in their number of essential bars)"
        )
        sections.append(
            title(heading) + "\n" + table(*_matrix_table(matrix.labels, matrix.values))
        )
    if report.equivalence is not None:
        sections.extend(_equivalence_sections(report.equivalence, table, title))
    return sections


def _class_table(report: Report) -> tuple[list[str], list[list[Any]]]:
    columns = [
        "class", "size", "members", "best_trial", "best_rank", "value_spread", "value_std",
        f"{report.score}_spread",
    ]  # fmt: skip
    rows = [
        [
            row["class_id"],
            row["size"],
            ",".join(str(n) for n in row["members"]),
            row["best_trial"],
            row["best_rank"],
            row["value_spread"],
            row["value_std"],
            row["score_spread"],
        ]  # fmt: skip
        for row in report.classes or []
    ]
    return columns, rows


def _matrix_table(labels: Sequence[str], values: np.ndarray) -> tuple[list[str], list[list[Any]]]:
    columns = ["trial", *labels]
    rows = []
    for label, line in zip(labels, values, strict=True):
        rows.append([label, *(None if math.isnan(v) else float(v) for v in line)])
    return columns, rows


def _equivalence_sections(equivalence: Equivalence, table, title) -> list[str]:
    thresholds = (
        f"equivalent: agreement >= {equivalence.agreement_threshold:g} and CKA >= "
        f"{equivalence.cka_threshold:g}"
    )
    sections = [
        title("Prediction agreement on the probe set")
        + "\n"
        + table(*_matrix_table(equivalence.labels, equivalence.agreement)),
        title("Linear CKA of penultimate features")
        + "\n"
        + table(*_matrix_table(equivalence.labels, equivalence.cka)),
    ]
    if equivalence.groups:
        columns = ["group_by", "a", "b", "pairs", "mean_agreement", "mean_cka", "equivalent"]
        rows = [[group[c] for c in columns] for group in equivalence.groups]
        sections.append(
            title(f"Equivalence between groups ({thresholds})") + "\n" + table(columns, rows)
        )
    return sections


# -- JSON ----------------------------------------------------------------------------------


def _number_or_infinity(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf"
    return float(value)


def _json_matrix(values: np.ndarray) -> list[list[float | str | None]]:
    return [[_number_or_infinity(float(v)) for v in row] for row in values]


def _trial_document(entry: RankedTrial, rows: Mapping[str, RunRow]) -> dict[str, Any]:
    from topselect.search._attrs import json_safe

    document = entry.to_dict()
    row = rows.get(entry.record.run_id or "")
    document.update(
        json_safe(
            {
                "topselect": row.topselect if row else True,
                "run_name": row.run_name if row else None,
                "status": row.status if row else None,
                "duration_s": row.duration if row else None,
                "params": dict(row.params) if row else {},
            }
        )
    )
    return document


def _document(report: Report) -> dict[str, Any]:
    from topselect.search._attrs import json_safe

    document: dict[str, Any] = {
        "schema_version": COMPARE_SCHEMA_VERSION,
        **report.header,
        "trials": [_trial_document(entry, report.rows) for entry in report.ranking],
        "classes": json_safe(report.classes or []),
        "distances": [
            {
                "metric": m.metric,
                "dimension": m.dimension,
                "trials": m.labels,
                "run_ids": m.run_ids,
                "essential_bars": m.essential,
                "values": _json_matrix(m.values),
            }
            for m in report.distances
        ],
        "equivalence": None,
        "problems": [
            {"run_id": p.run_id, "trial": p.trial, "path": p.path, "message": p.message}
            for p in report.problems
        ],
        "notes": list(report.notes),
    }
    equivalence = report.equivalence
    if equivalence is not None:
        document["equivalence"] = {
            "trials": equivalence.labels,
            "run_ids": equivalence.run_ids,
            "agreement": _json_matrix(equivalence.agreement),
            "cka": _json_matrix(equivalence.cka),
            "agreement_threshold": equivalence.agreement_threshold,
            "cka_threshold": equivalence.cka_threshold,
            "groups": json_safe(equivalence.groups),
            "notes": equivalence.notes,
        }
    return document
