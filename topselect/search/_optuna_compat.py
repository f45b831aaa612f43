"""Every use of Optuna's private API in topselect, in one place.

Optuna offers no public hook to show a sampler adjusted values, nor to write attributes
from a pruner, so the wrappers use the private names below. They were checked against
the releases in ``TESTED_RANGE``; an ``AttributeError`` from any of them means Optuna
changed, and is raised as :class:`IncompatibleVersionError` naming the range.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from topselect.exceptions import IncompatibleVersionError

_logger = logging.getLogger(__name__)

#: Optuna releases the private calls below were tested with: lowest (inclusive) and
#: highest (exclusive).
TESTED_RANGE = ("5.0", "5.2")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


_warned_versions: set[str] = set()


def check_version(version: str | None = None) -> bool:
    """Check an Optuna version against ``TESTED_RANGE`` and warn once when it lies outside.

    Only the major and minor numbers count, so ``5.1.3`` and ``5.1.0rc1`` are in range.

    Args:
        version: Version text; the installed Optuna's when ``None``.

    Returns:
        Whether the version lies in the tested range.
    """
    version = optuna.__version__ if version is None else version
    low, high = (_version_tuple(v) for v in TESTED_RANGE)
    if low <= _version_tuple(version) < high:
        return True
    if version not in _warned_versions:
        _warned_versions.add(version)
        _logger.warning(
            "Optuna %s is outside the range topselect was tested with (>=%s,<%s); the "
            "sampler and pruner rely on private Optuna methods that may have changed.",
            version,
            *TESTED_RANGE,
        )
    return False


def _incompatible(error: Exception) -> IncompatibleVersionError:
    return IncompatibleVersionError(
        f"Optuna {optuna.__version__} no longer offers a private interface topselect uses "
        f"({error}). Install a release in >={TESTED_RANGE[0]},<{TESTED_RANGE[1]}, e.g. "
        f"pip install 'optuna>={TESTED_RANGE[0]},<{TESTED_RANGE[1]}'."
    )


def get_trials(
    study: optuna.Study,
    deepcopy: bool = True,
    states: Container[TrialState] | None = None,
    use_cache: bool = False,
) -> list[FrozenTrial]:
    """Call ``Study._get_trials``, which built-in samplers use to read past trials."""
    try:
        return study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
    except AttributeError as error:
        raise _incompatible(error) from error


def with_adjusted_values(
    trial: FrozenTrial, value: float | None, last_intermediate: float | None
) -> FrozenTrial:
    """Return a shallow copy of ``trial`` with a new value and last intermediate value.

    The original (possibly cached by the study) is left untouched.
    """
    clone = copy.copy(trial)
    if value is not None and trial.values is not None:
        clone.values = [value]
    if last_intermediate is not None and trial.intermediate_values:
        intermediate = dict(trial.intermediate_values)
        intermediate[max(intermediate)] = last_intermediate
        # A plain attribute in Optuna 5.x: the clone gets its own dict, the cached original
        # keeps its values.
        clone.intermediate_values = intermediate
    return clone


def set_running_trial_user_attr(
    study: optuna.Study, trial: FrozenTrial, key: str, value: Any
) -> None:
    """Write a user attribute of a RUNNING trial known only as a ``FrozenTrial``."""
    try:
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    except AttributeError as error:
        raise _incompatible(error) from error


def stored_user_attrs(trial: optuna.trial.Trial) -> dict[str, Any]:
    """Read a running trial's user attributes from storage, including ones a pruner wrote.

    ``Trial.user_attrs`` may serve a cached copy that misses attributes written through
    the storage by another component.
    """
    try:
        return dict(trial.study._storage.get_trial(trial._trial_id).user_attrs)
    except AttributeError as error:
        raise _incompatible(error) from error


class AdjustedStudyView:
    """A read-only view of a study whose trial lists pass through ``adjust``.

    Optuna 5.1's built-in samplers read past trials through the private
    ``Study._get_trials``, and a sampler may also use ``get_trials`` or ``trials``, so the
    view overrides all three. Every other attribute is the study's own, so the view shares
    the study's storage and its per-thread trial cache, which a ``copy.copy`` of the study
    would drop.

    Args:
        study: The study, or a view Optuna made of it (HyperbandPruner's bracket study).
        adjust: Maps a trial to the trial the base sampler reads; it must not modify its input,
            because trials may be the storage's cached objects.
    """

    def __init__(self, study: optuna.Study, adjust: Callable[[FrozenTrial], FrozenTrial]) -> None:
        self._study = study
        self._adjust = adjust

    def __getattr__(self, name: str) -> Any:
        if name in ("_study", "_adjust"):  # Not yet set, e.g. while unpickling.
            raise AttributeError(name)
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = get_trials(self._study, deepcopy, states, use_cache)
        return [self._adjust(t) for t in trials]

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        # The study's own public method, because HyperbandPruner's bracket study (Optuna
        # 5.1) filters trials there and not in ``_get_trials``.
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [self._adjust(t) for t in trials]

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()
