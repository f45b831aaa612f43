"""The topology-aware ranking of trials, shared by the sampler, the demo and ``compare``."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from topselect.exceptions import InvalidInputError
from topselect.search import _attrs

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_SCORE",
    "DEFAULT_WEIGHT",
    "RankedTrial",
    "TrialRecord",
    "adjusted_value",
    "rank_records",
    "rank_trials",
]

#: Flatness score that adjusts values: the share of the slice in the basin of the trained
#: parameters 0.1 loss units above their loss (in [0, 1]; larger is flatter).
DEFAULT_SCORE = "basin_area_0.1"

# The default is 0, so TopologicalSampler() suggests exactly what its base sampler does
# and rank_trials ranks by raw values. The selection benchmark (python -m benchmarks run
# selection) ran 10 seeds x 2 data sets with 15 TPE trials each. There, weight 0.01 picked
# a model with better test accuracy than Optuna's best trial in 1 of 20 searches and the
# same trial in 19 (mean +0.08 points, 95% interval [0, 0.25]). Reranking at 0.03 to 0.3
# picked a worse model in 2 to 4 of 20 searches. Pass weight=0.01 to break near-ties by
# basin area.
#: Objective units added per unit of the score, for fitted trials only.
DEFAULT_WEIGHT = 0.0

_STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1}

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialRecord:
    """One trial's data for the ranking, read from Optuna storage or from MLflow.

    Attributes:
        number: Trial number.
        state: Optuna state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ...).
        value: Final objective value, or ``None``.
        last_intermediate: Last reported intermediate value, or ``None``.
        scores: Flatness scores by name.
        fitted: Whether the trial reached the fitted threshold; ``None`` if unknown.
        class_id: Homotopy class id, or ``None``.
        run_id: MLflow run id, when known.
        extra: Further values shown by ``compare`` (e.g. held-out test accuracy).
    """

    number: int
    state: str
    value: float | None
    last_intermediate: float | None = None
    scores: Mapping[str, float | None] = field(default_factory=dict)
    fitted: bool | None = None
    class_id: str | None = None
    run_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RankedTrial:
    """One position of the ranking, with its evidence.

    Attributes:
        rank: 1 for the best trial; ``None`` for trials that are not ranked (failed or
            still running).
        record: The trial's data.
        ranked_value: The raw value the position is based on: the final value of a
            completed trial, the last intermediate value of a pruned one.
        adjusted_value: ``ranked_value`` after the flatness adjustment.
        bonus: ``adjusted_value - ranked_value`` (signed towards better).
        evidence: One-line explanation of the adjustment.
    """

    rank: int | None
    record: TrialRecord
    ranked_value: float | None
    adjusted_value: float | None
    bonus: float
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-safe row used by ``topselect compare --format json``."""
        r = self.record
        return _attrs.json_safe(
            {
                "rank": self.rank,
                "trial": r.number,
                "state": r.state,
                "value": r.value,
                "ranked_value": self.ranked_value,
                "adjusted_value": self.adjusted_value,
                "bonus": self.bonus,
                "fitted": r.fitted,
                "class_id": r.class_id,
                "scores": dict(r.scores),
                "run_id": r.run_id,
                "extra": dict(r.extra),
                "evidence": self.evidence,
            }
        )


def adjusted_value(
    value: float,
    scores: Mapping[str, float | None],
    fitted: bool | None,
    *,
    maximize: bool,
    weight: float,
    score: str = DEFAULT_SCORE,
) -> tuple[float, str]:
    """Return the topology-adjusted value of a trial and the reason for the adjustment.

    A fitted trial with a finite ``score`` moves towards better by ``weight * score``. A
    trial that is not known to be fitted keeps its value, so the adjustment never lifts
    an underfit model (whose flat, high-loss plateau scores as "flat") above a fitted one.
    A negative score counts as 0 (with a warning, once per score name): a fitted trial
    never moves towards worse, so it cannot fall below an underfit trial it ranked above
    on raw values.
    """
    flatness = scores.get(score)
    if weight == 0:
        return value, "weight 0: raw value"
    if fitted is not True:
        return value, "not fitted: raw value"
    if not isinstance(flatness, int | float) or not math.isfinite(flatness):
        return value, f"no {score}: raw value"
    if flatness < 0:
        _warn_negative_score(score, float(flatness))
        return value, f"{score}={flatness:.4g} < 0 counted as 0: raw value"
    bonus = weight * float(flatness)
    adjusted = value + bonus if maximize else value - bonus
    return adjusted, f"{score}={flatness:.4g} x weight {weight:g}"


_NEGATIVE_SCORES_WARNED: set[str] = set()


def _warn_negative_score(score: str, flatness: float) -> None:
    if score in _NEGATIVE_SCORES_WARNED:
        return
    _NEGATIVE_SCORES_WARNED.add(score)
    _logger.warning(
        "Score %r is negative (%g) for a fitted trial, so the adjustment counts it as 0. "
        "Choose a score where larger means flatter and that is never negative, such as "
        "%r.",
        score,
        flatness,
        DEFAULT_SCORE,
    )


def rank_records(
    records: Iterable[TrialRecord],
    *,
    maximize: bool,
    weight: float = DEFAULT_WEIGHT,
    score: str = DEFAULT_SCORE,
) -> list[RankedTrial]:
    """Rank trials: completed ones by adjusted value, then pruned ones by adjusted last
    intermediate value, then unranked ones (failed, running) by trial number.

    Ties are broken by trial number, so the ranking is a pure function of the records.
    """
    ranked, unranked = [], []
    for record in records:
        basis = _basis(record)
        if basis is None:
            unranked.append(RankedTrial(None, record, None, None, 0.0, "not ranked"))
            continue
        adjusted, evidence = adjusted_value(
            basis, record.scores, record.fitted, maximize=maximize, weight=weight, score=score
        )
        bonus = (adjusted - basis) if maximize else (basis - adjusted)
        ranked.append((record, basis, adjusted, bonus, evidence))
    sign = -1.0 if maximize else 1.0
    ranked.sort(key=lambda item: (_STATE_ORDER[item[0].state], sign * item[2], item[0].number))
    out = [
        RankedTrial(i + 1, record, basis, adjusted, bonus, evidence)
        for i, (record, basis, adjusted, bonus, evidence) in enumerate(ranked)
    ]
    return out + sorted(unranked, key=lambda r: r.record.number)


def _basis(record: TrialRecord) -> float | None:
    if record.state == "COMPLETE" and _finite(record.value):
        return record.value
    if record.state == "PRUNED" and _finite(record.last_intermediate):
        return record.last_intermediate
    return None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def record_from_trial(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    """Build the ranking record of an Optuna trial from its topselect attributes."""
    attrs = trial.user_attrs
    intermediate = trial.intermediate_values
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        # Optuna stores a pruned trial's last intermediate value as its value; MLflow has
        # no final value for it. Both readers leave it out, so their rankings agree.
        value=(
            trial.values[0]
            if trial.state.name == "COMPLETE"
            and trial.values is not None
            and len(trial.values) == 1
            else None
        ),
        last_intermediate=intermediate[max(intermediate)] if intermediate else None,
        scores=attrs.get(_attrs.SCORES) or {},
        fitted=attrs.get(_attrs.FITTED),
        class_id=attrs.get(_attrs.CLASS_ID),
        run_id=attrs.get(_attrs.MLFLOW_RUN_ID),
        extra={k: v for k, v in attrs.items() if not k.startswith(_attrs.PREFIX)},
    )


def rank_trials(
    study: optuna.Study, *, weight: float | None = None, score: str | None = None
) -> list[RankedTrial]:
    """Rank a study's trials by the values :class:`TopologicalSampler` shows its base sampler.

    Completed trials come first, ordered by topology-adjusted value. Pruned trials follow,
    ordered by their adjusted last intermediate value. Failed and running trials close
    the list unranked. Each entry carries the evidence for its position.

    Args:
        study: A single-objective study.
        weight: Objective units per unit of score. Defaults to the study sampler's weight
            when it is a :class:`TopologicalSampler`, else :data:`DEFAULT_WEIGHT`.
        score: Name of the flatness score; defaults like ``weight``.

    Raises:
        InvalidInputError: For a multi-objective study.
    """
    if len(study.directions) != 1:
        raise InvalidInputError(
            f"rank_trials ranks single-objective studies, but {study.study_name!r} has "
            f"{len(study.directions)} objectives."
        )
    sampler_weight = getattr(study.sampler, "weight", DEFAULT_WEIGHT)
    sampler_score = getattr(study.sampler, "score", DEFAULT_SCORE)
    import optuna

    return rank_records(
        (record_from_trial(t) for t in study.get_trials(deepcopy=False)),
        maximize=study.direction == optuna.study.StudyDirection.MAXIMIZE,
        weight=sampler_weight if weight is None else weight,
        score=sampler_score if score is None else score,
    )
