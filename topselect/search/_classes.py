"""Homotopy classes read from Optuna storage: representatives, merges and class ids.

Every function here reads trial attributes only, so any worker that reads the same
storage gets the same representatives and the same class ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from topselect.homotopy import ClassDecision, Representative, resolve_classes
from topselect.search import _attrs, _optuna_compat

__all__ = [
    "class_components",
    "previous_decision",
    "representatives_from_trials",
    "resolve_trial_classes",
    "study_classes",
]

# A founder still RUNNING has written its attributes and is about to be marked COMPLETE,
# so other workers may already test against it.
_FOUNDER_STATES = (TrialState.COMPLETE, TrialState.RUNNING)


def representatives_from_trials(
    trials: Iterable[FrozenTrial],
    *,
    architecture: str,
    probe_fingerprint: str,
    exclude: int | None = None,
) -> list[Representative]:
    """Return the class representatives among ``trials`` that a trajectory may join.

    Only representatives of the same architecture and probe set count, and only while
    their trial is COMPLETE or RUNNING. They are ordered by trial number.

    Args:
        trials: The study's trials.
        architecture: The architecture signature of the trajectory to place.
        probe_fingerprint: Fingerprint of the probe set its barriers are measured on.
        exclude: A trial number to leave out (the trial being placed).
    """
    reps = []
    for trial in sorted(trials, key=lambda t: t.number):
        attrs = trial.user_attrs
        if (
            trial.number == exclude
            or trial.state not in _FOUNDER_STATES
            or not attrs.get(_attrs.REPRESENTATIVE)
            or attrs.get(_attrs.ARCHITECTURE) != architecture
            or attrs.get(_attrs.PROBE_FINGERPRINT) != probe_fingerprint
            or not attrs.get(_attrs.WAYPOINTS_REF)
        ):
            continue
        sketches = attrs.get(_attrs.SKETCHES) or {}
        reps.append(
            Representative(
                class_id=_founded_class(trial),
                trial_number=trial.number,
                sketches={float(f): np.asarray(s, dtype=float) for f, s in sketches.items()},
                waypoints_ref=str(attrs[_attrs.WAYPOINTS_REF]),
                architecture=architecture,
            )
        )
    return reps


def class_components(trials: Iterable[FrozenTrial]) -> dict[str, str]:
    """Return the merged class id of every class founded or merged in ``trials``.

    Membership searches pass this to ``assign_class``, which then skips representatives
    of a merged class that the trial already joined.
    """
    founders, merges = _founders_and_merges(list(trials))
    return resolve_classes(founders, merges)


def resolve_trial_classes(trials: Iterable[FrozenTrial]) -> dict[int, str | None]:
    """Return each trial's class id after every merge recorded in ``trials``.

    A trial's ``topselect.class_id`` attribute is the class as known when the trial was
    placed. Classes merged later (by a trial that linked two of them) are named after
    the class founded by the lowest trial number; see ``resolve_classes``. Trials of
    every state count as sources of merges, because a merge is written while its trial
    is still running.
    """
    trials = list(trials)
    resolved = resolve_classes(*_founders_and_merges(trials))
    out: dict[int, str | None] = {}
    for trial in trials:
        class_id = trial.user_attrs.get(_attrs.CLASS_ID)
        out[trial.number] = None if class_id is None else resolved.get(class_id, class_id)
    return out


def study_classes(study: optuna.Study) -> dict[int, str | None]:
    """Return the current homotopy class of every trial of ``study``, merges applied.

    ``None`` marks a trial with no class (unfitted, failed, or not placed yet). Read
    this instead of the raw ``topselect.class_id`` attribute, which may name a class
    that was merged since.

    Example:
        >>> classes = topselect.search.study_classes(study)  # doctest: +SKIP
        >>> members = [n for n, c in classes.items() if c == classes[best.number]]
    """
    return resolve_trial_classes(_optuna_compat.get_trials(study, deepcopy=False))


def previous_decision(attrs: Mapping[str, Any]) -> ClassDecision | None:
    """Rebuild a running trial's last class decision from its stored attributes.

    ``topselect.class_id`` is the class of the representative the trial was witnessed
    against (before later merges), so the rebuilt decision names that representative.
    """
    class_id = attrs.get(_attrs.CLASS_ID)
    if class_id is None:
        return None
    fractions = tuple(float(f) for f in attrs.get(_attrs.CLASS_FRACTIONS) or ())
    barriers = {
        str(k): float(v)
        for k, v in (attrs.get(_attrs.CLASS_BARRIERS) or {}).items()
        if v is not None
    }
    return ClassDecision(class_id=str(class_id), barriers=barriers, fractions=fractions)


def _founders_and_merges(
    trials: list[FrozenTrial],
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    founders = {
        _founded_class(t): t.number for t in trials if t.user_attrs.get(_attrs.REPRESENTATIVE)
    }
    merges = [
        (str(a), str(b)) for t in trials for a, b in t.user_attrs.get(_attrs.CLASS_MERGES) or []
    ]
    return founders, merges


def _founded_class(trial: FrozenTrial) -> str:
    return f"c{trial.number}"
