"""An Optuna pruner that adds a homotopy-class rule to a base pruner."""

from __future__ import annotations

import logging
import math
import statistics

import optuna
from optuna.pruners import BasePruner
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from topselect.exceptions import InvalidInputError
from topselect.search import _attrs, _optuna_compat
from topselect.search._classes import resolve_trial_classes

__all__ = ["TopologicalPruner"]

_logger = logging.getLogger(__name__)


class TopologicalPruner(BasePruner):
    """Prune with a base pruner, plus a rule on homotopy classes.

    Class rule: the trial tracker places a running trial in a homotopy class on the prefix
    of its trajectory. Such a trial is pruned when that class already contains at least
    ``min_class_members`` completed trials and every one of them ended worse than the
    median value of all completed trials by more than ``margin``. The trial must also
    have reported at least ``warmup_steps`` steps. Nothing is pruned on missing data: a
    trial without a class, or a class without enough completed members, is left to the
    base pruner. Every decision depends only on storage, so every worker reaches the
    same one.

    The reason for each prune is stored in the trial's ``topselect.prune_reason`` user
    attribute: ``"<base pruner class> at step <n>"`` for the base pruner's decisions,
    ``"class <id>: ..."`` for the class rule's. Without class data every decision is the
    base pruner's, at the same step. The class rule never applies to multi-objective
    studies, where Optuna's ``Trial.should_prune`` raises anyway.

    Defaults: the base pruner is ``MedianPruner()``, which is also Optuna's default, so
    on the same study state ``TopologicalPruner()`` prunes whenever a study created
    without a pruner argument would. In the pruning benchmark
    (``python -m benchmarks run pruning``: digits and MNIST-1D MLPs, 2 seeds, 20 trials
    of 12 epochs), the class rule never fired. No MNIST-1D trial reached the tracker's
    ``fit_loss``, so no class was founded there, and no digits class met the rule.
    ``TopologicalPruner()`` therefore pruned exactly as ``MedianPruner()``, saving 38%
    of epochs against no pruning with the same best test accuracy.

    Args:
        base_pruner: Pruner consulted first; ``MedianPruner()`` when ``None``.
        min_class_members: Completed members a class needs before the rule applies (>= 1).
        margin: Objective units by which every member must be worse than the median (>= 0).
        warmup_steps: Reported steps a trial needs before the class rule applies (>= 0).

    Raises:
        InvalidInputError: For an argument outside the ranges above.
    """

    def __init__(
        self,
        base_pruner: BasePruner | None = None,
        *,
        min_class_members: int = 3,
        margin: float = 0.0,
        warmup_steps: int = 5,
    ) -> None:
        if base_pruner is not None and not isinstance(base_pruner, BasePruner):
            raise InvalidInputError(
                f"base_pruner must be an optuna.pruners.BasePruner, but got "
                f"{type(base_pruner).__name__}."
            )
        if min_class_members < 1:
            raise InvalidInputError(
                f"min_class_members must be >= 1, but got {min_class_members}."
            )
        if not (math.isfinite(margin) and margin >= 0):
            raise InvalidInputError(f"margin must be a finite number >= 0, but got {margin}.")
        if warmup_steps < 0:
            raise InvalidInputError(f"warmup_steps must be >= 0, but got {warmup_steps}.")
        _optuna_compat.check_version()
        self.base_pruner = base_pruner or optuna.pruners.MedianPruner()
        self.min_class_members = min_class_members
        self.margin = float(margin)
        self.warmup_steps = warmup_steps

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        if self.base_pruner.prune(study, trial):
            base_reason = f"{type(self.base_pruner).__name__} at step {trial.last_step}"
            self._record(study, trial, base_reason)
            return True
        class_reason = self._class_rule(study, trial)
        if class_reason is None:
            return False
        self._record(study, trial, class_reason)
        return True

    def _class_rule(self, study: Study, trial: FrozenTrial) -> str | None:
        class_id = trial.user_attrs.get(_attrs.CLASS_ID)
        if class_id is None or len(study.directions) != 1:
            return None
        if trial.last_step is None or len(trial.intermediate_values) < self.warmup_steps:
            return None
        trials = _optuna_compat.get_trials(study, deepcopy=False, use_cache=False)
        # Class ids as merged since the trials were placed; merges may come from any trial.
        classes = resolve_trial_classes([*trials, trial])
        class_id = classes[trial.number]
        completed = [
            t
            for t in trials
            if t.state == TrialState.COMPLETE and t.values is not None and len(t.values) == 1
        ]
        members = [float(t.values[0]) for t in completed if classes.get(t.number) == class_id]
        if len(members) < self.min_class_members:
            return None
        median = statistics.median(float(t.values[0]) for t in completed)
        maximize = study.direction == StudyDirection.MAXIMIZE
        if maximize:
            all_worse = all(v < median - self.margin for v in members)
        else:
            all_worse = all(v > median + self.margin for v in members)
        if not all_worse:
            return None
        best = max(members) if maximize else min(members)
        return (
            f"class {class_id}: all {len(members)} completed members ended worse than the "
            f"median {median:.6g} by more than {self.margin:g} (best member {best:.6g})"
        )

    @staticmethod
    def _record(study: Study, trial: FrozenTrial, reason: str) -> None:
        _logger.info("Pruning trial %d: %s.", trial.number, reason)
        _optuna_compat.set_running_trial_user_attr(study, trial, _attrs.PRUNE_REASON, reason)
