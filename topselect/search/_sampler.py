"""An Optuna sampler that shows its base sampler topology-adjusted values."""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
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

    Before each call, the base sampler gets a read-only view of the study. In that view,
    every fitted trial with topology data appears with ``value +/- weight * score``
    (towards better). The adjustment applies to the final value of completed trials and to
    the last intermediate value of pruned trials, which TPE ranks them by. Trials without
    topology data, or not fitted, keep their raw values. Storage is never changed. With
    ``weight=0`` the base sampler reads the study exactly as it is and makes exactly its
    own suggestions.

    Args:
        base_sampler: The sampler to wrap; ``TPESampler(seed=seed)`` when ``None``.
        weight: Objective units per unit of score (>= 0).
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
        return _AdjustedStudy(study, self)  # type: ignore[return-value]

    def _adjust(self, trial: FrozenTrial, maximize: bool) -> FrozenTrial:
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return trial
        record = record_from_trial(trial)
        new_value = new_last = None
        if trial.state == TrialState.COMPLETE and record.value is not None:
            new_value, _ = adjusted_value(
                record.value,
                record.scores,
                record.fitted,
                maximize=maximize,
                weight=self.weight,
                score=self.score,
            )
        if record.last_intermediate is not None:
            new_last, _ = adjusted_value(
                record.last_intermediate,
                record.scores,
                record.fitted,
                maximize=maximize,
                weight=self.weight,
                score=self.score,
            )
        if new_value == record.value and new_last == record.last_intermediate:
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


class _AdjustedStudy:
    """A view of a study whose trial lists carry topology-adjusted values.

    Every other attribute is the study's own, so the view shares the study's storage and
    its per-thread trial cache (a ``copy.copy`` of the study would not).
    """

    def __init__(self, study: Study, sampler: TopologicalSampler) -> None:
        self._study = study
        self._sampler = sampler
        self._maximize = study.direction == StudyDirection.MAXIMIZE

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = _optuna_compat.get_trials(self._study, deepcopy, states, use_cache)
        return [self._sampler._adjust(t, self._maximize) for t in trials]

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()
