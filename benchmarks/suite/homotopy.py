"""Homotopy: a summary of the spread results that the homotopy scripts measured.

This entry trains nothing. It reads ``benchmarks/results/homotopy_spread.json``, which
``python benchmarks/homotopy_spread.py`` writes from the trajectories of
``homotopy_trajectories.py`` and the barrier matrix of ``homotopy_scaling.py``. It
restates the default mode's within- and across-class spreads next to the claim of
arXiv 2510.04376: runs in one class within 0.5 points of test accuracy, runs in
different classes more than 3 points apart. Those scripts own the measurement and its
section of BENCHMARKS.md, so run them first to refresh it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["SPREAD_RESULT", "render", "run"]

_logger = logging.getLogger(__name__)

SPREAD_RESULT = Path(__file__).resolve().parents[1] / "results" / "homotopy_spread.json"
SCRIPTS = (
    "python benchmarks/homotopy_trajectories.py --runs 200",
    "python benchmarks/homotopy_scaling.py",
    "python benchmarks/homotopy_spread.py",
)


def run(*, quick: bool, seed: int) -> dict[str, Any]:
    """Summarize the stored spread result (the same at both sizes; ``seed`` is unused).

    Raises:
        FileNotFoundError: When the spread result is missing, with the commands that
            write it.
    """
    if not SPREAD_RESULT.exists():
        raise FileNotFoundError(f"{SPREAD_RESULT} is missing; run {'; '.join(SCRIPTS)} first.")
    stored = json.loads(SPREAD_RESULT.read_text())
    try:
        rows = _default_mode_rows(stored)
    except (KeyError, TypeError) as error:
        # The homotopy scripts own this file's layout; an unknown layout leaves a pointer.
        _logger.warning("%s has a layout this summary does not read: %r", SPREAD_RESULT, error)
        rows = []
    return {"source": str(SPREAD_RESULT.name), "machine": stored.get("machine"), "rows": rows}


def _default_mode_rows(stored: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for dataset in stored["results"]:
        for entry in dataset["epsilons"]:
            fast = entry["fast"]
            rows.append(
                {
                    "dataset": dataset["dataset"],
                    "runs": dataset["n"],
                    "fitted": dataset["fitted"],
                    "epsilon": entry["epsilon"],
                    "classes": fast["classes"],
                    "within_range_median": fast["within_range_median"],
                    "within_range_max": fast["within_range_max"],
                    "within_share_below_0_5": fast["within_share_below_0_5"],
                    "across_share_above_3": fast.get("across_share_above_3"),
                }
            )
    return rows


def render(result: dict[str, Any]) -> str:
    """Return the Markdown body: the default mode's spreads and where they come from."""
    from benchmarks.suite._table import table

    machine = result.get("machine") or {}
    if not result["rows"]:
        return (
            "`benchmarks/results/homotopy_spread.json` has a layout this summary does not "
            'read; see the section "Homotopy classes: accuracy spread within and across '
            f'classes" above, produced by {", ".join(f"`{c}`" for c in SCRIPTS)}.'
        )
    rows = [
        [
            r["dataset"],
            r["epsilon"],
            f"{r['classes']} ({r['fitted']} fitted of {r['runs']})",
            f"{r['within_range_median']:.2f} / {r['within_range_max']:.2f}",
            r["within_share_below_0_5"],
            r["across_share_above_3"],
        ]
        for r in result["rows"]
    ]
    return "\n\n".join(
        [
            "Restated from `benchmarks/results/homotopy_spread.json` (measured "
            f"{machine.get('date', 'on an unknown date')} at commit "
            f"{machine.get('commit', 'unknown')} by `{SCRIPTS[2]}`; the section "
            '"Homotopy classes: accuracy spread within and across classes" has every '
            "grouping). Default class mode, fitted runs, test accuracy in points. Claim "
            "checked: same-class runs within 0.5 points, different-class runs more than "
            "3 points apart.",
            table(
                [
                    "data set",
                    "epsilon",
                    "classes",
                    "within-class range median / max",
                    "same-class pairs < 0.5",
                    "different-class pairs > 3",
                ],
                rows,
            ),
            _verdict(result["rows"]),
        ]
    )


def _verdict(rows: list[dict[str, Any]]) -> str:
    """State whether the claim held at any epsilon: every class within 0.5 points and
    most different-class pairs (over half) more than 3 points apart."""
    matching = [
        f"{r['dataset']} at epsilon {r['epsilon']}"
        for r in rows
        if r["within_range_max"] <= 0.5 and (r["across_share_above_3"] or 0) > 0.5
    ]
    if matching:
        return "The claim held for " + ", ".join(matching) + "."
    widest = max(r["within_range_max"] for r in rows)
    max_share_apart = max((r["across_share_above_3"] or 0) for r in rows)
    return (
        f"The claim held at no epsilon on either data set: the widest class spans "
        f"{widest:.2f} points, and at most {100 * max_share_apart:.0f}% of different-class "
        "pairs are more than 3 points apart."
    )
