"""Study-level artifacts of the parent run: ranking, class table and selection report."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any

from topselect.search import _attrs
from topselect.tracking._artifacts import SCHEMA_VERSION, csv_bytes

if TYPE_CHECKING:
    import optuna

    from topselect.search import RankedTrial

__all__ = ["class_table", "study_artifacts"]

_RANKING_COLUMNS = (
    "rank", "trial", "state", "value", "ranked_value", "adjusted_value", "bonus", "fitted",
    "class_id", "run_id",
)  # fmt: skip
_CLASS_COLUMNS = (
    "class_id", "size", "members", "representatives", "best_trial", "value_min",
    "value_max", "value_spread", "value_std",
)  # fmt: skip


def study_artifacts(study: optuna.Study) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Build the study-level artifacts of the parent run from the study's storage.

    Returns:
        JSON documents by file name (``ranking.json``, ``classes.json``,
        ``selection_report.json``) and CSV files by name (``ranking.csv``,
        ``classes.csv``). A multi-objective study gets no ranking files, because the
        ranking ranks single-objective studies only.
    """
    from topselect.search import rank_trials, study_classes

    trials = study.get_trials(deepcopy=False)
    maximize = len(study.directions) == 1 and study.directions[0].name == "MAXIMIZE"
    classes = study_classes(study)
    values = {
        t.number: t.values[0]
        for t in trials
        if t.state.name == "COMPLETE" and t.values is not None and len(t.values) == 1
    }
    representatives = {t.number for t in trials if t.user_attrs.get(_attrs.REPRESENTATIVE)}
    table = class_table(classes, values, representatives, maximize=maximize)
    json_files: dict[str, Any] = {
        "classes.json": {
            "schema_version": SCHEMA_VERSION,
            "classes": table,
            "unclassified": sorted(n for n, c in classes.items() if c is None),
        }
    }
    files = {"classes.csv": _class_csv(table)}
    ranking: list[RankedTrial] = []
    if len(study.directions) == 1:
        ranking = rank_trials(study)
        json_files["ranking.json"] = {
            "schema_version": SCHEMA_VERSION,
            "direction": "maximize" if maximize else "minimize",
            "trials": [entry.to_dict() for entry in ranking],
        }
        files["ranking.csv"] = _ranking_csv(ranking)
    json_files["selection_report.json"] = _selection_report(study, trials, ranking, table)
    return json_files, files


def class_table(
    classes: dict[int, str | None],
    values: dict[int, float],
    representatives: set[int],
    *,
    maximize: bool,
) -> list[dict[str, Any]]:
    """Summarize each class: members, representatives, best member and value spread.

    Args:
        classes: Class id of every trial number (``None`` for no class).
        values: Final objective values of completed trials.
        representatives: Trial numbers that founded a class.
        maximize: Whether larger values are better (decides ``best_trial``).

    Returns:
        One row per class, largest class first. ``value_spread`` is max minus min of
        the members' values and ``value_std`` their population standard deviation, in
        objective units; both are ``None`` without completed members.
    """
    members: dict[str, list[int]] = {}
    for number, class_id in classes.items():
        if class_id is not None:
            members.setdefault(class_id, []).append(number)
    rows = []
    for class_id, numbers in members.items():
        numbers.sort()
        scored = [(values[n], n) for n in numbers if n in values and math.isfinite(values[n])]
        row: dict[str, Any] = {
            "class_id": class_id,
            "size": len(numbers),
            "members": numbers,
            "representatives": [n for n in numbers if n in representatives],
            "best_trial": None,
            "value_min": None,
            "value_max": None,
            "value_spread": None,
            "value_std": None,
        }
        if scored:
            # Ties go to the lower trial number, as in the ranking.
            if maximize:
                best = max(scored, key=lambda item: (item[0], -item[1]))
            else:
                best = min(scored)
            found = [v for v, _ in scored]
            row.update(
                best_trial=best[1],
                value_min=min(found),
                value_max=max(found),
                value_spread=max(found) - min(found),
                value_std=statistics.pstdev(found),
            )
        rows.append(row)
    rows.sort(key=lambda row: (-row["size"], row["class_id"]))
    return rows


def _selection_report(
    study: optuna.Study,
    trials: list[optuna.trial.FrozenTrial],
    ranking: list[RankedTrial],
    table: list[dict[str, Any]],
) -> dict[str, Any]:
    from topselect.search import DEFAULT_SCORE, DEFAULT_WEIGHT

    completed = [e for e in ranking if e.rank is not None and e.record.state == "COMPLETE"]
    maximize = study.directions[0].name == "MAXIMIZE"
    by_value = None
    if completed:
        pick = max if maximize else min
        by_value = pick(completed, key=lambda e: (e.record.value, -e.record.number))
    by_topselect = completed[0] if completed else None
    fingerprints = sorted(
        {str(t.user_attrs[_attrs.PROBE_FINGERPRINT]) for t in trials if _has_fingerprint(t)}
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "study": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "weight": getattr(study.sampler, "weight", DEFAULT_WEIGHT),
        "score": getattr(study.sampler, "score", DEFAULT_SCORE),
        "trials_by_state": dict(Counter(t.state.name for t in trials)),
        "fitted_trials": sum(1 for t in trials if t.user_attrs.get(_attrs.FITTED) is True),
        "classes": len(table),
        "probe_fingerprints": fingerprints,
        "best_by_value": _choice(by_value),
        "best_by_topselect": _choice(by_topselect),
        "same_choice": (
            by_value is not None
            and by_topselect is not None
            and by_value.record.number == by_topselect.record.number
        ),
    }


def _has_fingerprint(trial: optuna.trial.FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(_attrs.PROBE_FINGERPRINT))


def _choice(entry: RankedTrial | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        "trial": entry.record.number,
        "value": entry.record.value,
        "adjusted_value": entry.adjusted_value,
        "class_id": entry.record.class_id,
        "run_id": entry.record.run_id,
        "evidence": entry.evidence,
    }


def _ranking_csv(ranking: list[RankedTrial]) -> bytes:
    rows = []
    for entry in ranking:
        r = entry.record
        rows.append(
            [
                entry.rank,
                r.number,
                r.state,
                r.value,
                entry.ranked_value,
                entry.adjusted_value,
                entry.bonus,
                r.fitted,
                r.class_id,
                r.run_id,
            ]  # fmt: skip
        )
    return csv_bytes(_RANKING_COLUMNS, rows)


def _class_csv(table: list[dict[str, Any]]) -> bytes:
    rows = []
    for row in table:
        cells = dict(row)
        cells["members"] = " ".join(str(n) for n in row["members"])
        cells["representatives"] = " ".join(str(n) for n in row["representatives"])
        rows.append([cells[column] for column in _CLASS_COLUMNS])
    return csv_bytes(_CLASS_COLUMNS, rows)
