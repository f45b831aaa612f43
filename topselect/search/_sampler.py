"""An Optuna sampler that shows its base sampler topology-adjusted values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from topselect.exceptions import InvalidInputError
from topselect.search import _optuna_compat
from topselect.search._ranking import (
    DEFAULT_SCORE,
    DEFAULT_WEIGHT,
    adjusted_value,
    record_from_trial,
)

__all__ = ["TopologicalSampler"]


class TopologicalSampler(BaseSampler):
    """Wrap an Optuna sampler so it learns from topology-adjusted trial values.

    Before each sampling call, the base sampler gets a read-only view of the study. In
    that view, every fitted trial with topology data appears with
    ``value +/- weight * score`` (towards better). The same shift applies to the value and
    to the last intermediate value of completed and pruned trials: TPE ranks pruned trials
    by their last intermediate value, and Optuna stores that value as a pruned trial's
    value. Trials without topology data, or not fitted, keep their raw values, and so do
    running and failed trials. Storage is never changed. ``before_trial``,
    ``after_trial`` and ``reseed_rng`` go to the base sampler unchanged. With ``weight=0``
    the base sampler reads the study exactly as it is and makes exactly its own
    suggestions.

    Multi-objective studies are supported only with ``weight=0``. With a positive weight,
    the first sampling call in such a study raises :class:`InvalidInputError`, which
    fails that trial.

    Args:
        base_sampler: The sampler to wrap; ``TPESampler(seed=seed)`` when ``None``.
        weight: Objective units per unit of score (>= 0). The default, 0, leaves the
            base sampler's suggestions unchanged, because the selection benchmark found
            no reliable gain from a positive weight (see :data:`DEFAULT_WEIGHT`).
        score: Name of the flatness score stored by the trial tracker.
        seed: Seed of the default TPE sampler; ignored when ``base_sampler`` is given.

    Raises:
        InvalidInputError: When ``weight`` is negative or not finite, or ``base_sampler``
            is not an Optuna sampler.

    Example:
        >>> import optuna, topselect
        >>> study = optuna.create_study(sampler=topselect.TopologicalSampler(seed=0))
    """

    def __init__(
        self,
        base_sampler: BaseSampler | None = None,
        *,
        weight: float = DEFAULT_WEIGHT,
        score: str = DEFAULT_SCORE,
        seed: int | None = None,
    ) -> None:
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
            raise InvalidInputError(f"weight must be a finite number >= 0, but got {weight!r}.")
        if base_sampler is not None and not isinstance(base_sampler, BaseSampler):
            raise InvalidInputError(
                f"base_sampler must be an optuna.samplers.BaseSampler, but got "
                f"{type(base_sampler).__name__}."
            )
        _optuna_compat.check_version()
        self.base_sampler = base_sampler or optuna.samplers.TPESampler(seed=seed)
        self.weight = float(weight)
        self.score = score

    def __repr__(self) -> str:
        return (
            f"TopologicalSampler({self.base_sampler!r}, weight={self.weight}, "
            f"score={self.score!r})"
        )

    def _view(self, study: Study) -> Study:
        if self.weight == 0:
            return study
        if len(study.directions) != 1:
            raise InvalidInputError(
                f"TopologicalSampler adjusts single-objective studies, but {study.study_name!r} "
                f"has {len(study.directions)} objectives. Use weight=0 to wrap a "
                "multi-objective sampler unchanged."
            )
        maximize = study.direction == StudyDirection.MAXIMIZE
        view = _optuna_compat.AdjustedStudyView(study, lambda t: self._adjust(t, maximize))
        return view  # type: ignore[return-value]

    def _adjust(self, trial: FrozenTrial, maximize: bool) -> FrozenTrial:
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return trial
        record = record_from_trial(trial)

        def shift(raw: float | None) -> float | None:
            if raw is None:
                return None
            adjusted, _ = adjusted_value(
                raw,
                record.scores,
                record.fitted,
                maximize=maximize,
                weight=self.weight,
                score=self.score,
            )
            return adjusted

        # Optuna stores a pruned trial's last intermediate value as its value, so both
        # move by the same amount and stay equal in the view.
        raw_value = (
            trial.values[0] if trial.values is not None and len(trial.values) == 1 else None
        )
        new_value = shift(raw_value)
        new_last = shift(record.last_intermediate)
        if new_value == raw_value and new_last == record.last_intermediate:
            return trial
        return _optuna_compat.with_adjusted_values(trial, new_value, new_last)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.base_sampler.infer_relative_search_space(self._view(study), trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.base_sampler.sample_relative(self._view(study), trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.base_sampler.sample_independent(
            self._view(study), trial, param_name, param_distribution
        )

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.base_sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.base_sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base_sampler.reseed_rng()
