"""TopologicalSampler and TopologicalPruner on real sqlite Optuna studies.

The topselect attributes are set by hand here (no training), so each test controls the
exact values the sampler adjusts and the pruner judges.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

import topselect
from topselect.search import DEFAULT_SCORE

SEED = 0
SCORES = "topselect.scores"
FITTED = "topselect.fitted"
CLASS_ID = "topselect.class_id"
PRUNE_REASON = "topselect.prune_reason"


# -- sampler: weight 0 is the base sampler ---------------------------------------------


def plain_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -3.0, 3.0)
    n = trial.suggest_int("n", 1, 8)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    return (x - 1.0) ** 2 + 0.1 * n + {"a": 0.0, "b": 0.5, "c": 1.0}[kind]


def objective_with_topology_attrs(trial: optuna.Trial) -> float:
    """Like ``plain_objective``, plus hand-set topselect attrs that favor other params.

    The flatness score grows with ``|x - 1|``, away from the optimum, so a positive weight
    changes which trials look best to the base sampler.
    """
    value = plain_objective(trial)
    x = trial.params["x"]
    for step in range(3):
        trial.report(value + 1.0 / (step + 1), step)
    trial.set_user_attr(SCORES, {DEFAULT_SCORE: min(1.0, abs(x - 1.0) / 4.0)})
    trial.set_user_attr(FITTED, True)
    return value


def suggested_params(storage: str, sampler: BaseSampler, objective: Callable) -> list[dict]:
    study = optuna.create_study(storage=storage, direction="minimize", sampler=sampler)
    study.optimize(objective, n_trials=15)
    return [trial.params for trial in study.trials]


@pytest.mark.parametrize(
    "objective", [plain_objective, objective_with_topology_attrs], ids=["plain", "attrs"]
)
@pytest.mark.parametrize("seed", [0, 7])
def test_sampler_weight_zero_matches_base(
    optuna_storage: str, objective: Callable, seed: int
) -> None:
    bare = suggested_params(optuna_storage, TPESampler(seed=seed, n_startup_trials=5), objective)
    wrapped = suggested_params(
        optuna_storage,
        topselect.TopologicalSampler(TPESampler(seed=seed, n_startup_trials=5), weight=0),
        objective,
    )

    assert wrapped == bare


def test_sampler_positive_weight_changes_suggestions(optuna_storage: str) -> None:
    # Guards the test above: its hand-set attrs are strong enough to change TPE's choices.
    bare = suggested_params(
        optuna_storage, TPESampler(seed=SEED, n_startup_trials=5), objective_with_topology_attrs
    )
    weighted = suggested_params(
        optuna_storage,
        topselect.TopologicalSampler(TPESampler(seed=SEED, n_startup_trials=5), weight=5.0),
        objective_with_topology_attrs,
    )

    assert weighted[:5] == bare[:5]  # Startup trials are random and ignore values.
    assert weighted[5:] != bare[5:]


# -- sampler: the study view passed to the base sampler ----------------------------------


class RecordingSampler(BaseSampler):
    """A real sampler that suggests the lower bound and records the trials it was shown.

    It reads trials the way Optuna 5.1's TPESampler does (``Study._get_trials`` with
    the per-thread cache) and through the public ``get_trials`` and ``trials``.
    """

    def __init__(self) -> None:
        self.views: list[dict[str, dict[int, tuple[float | None, dict[int, float]]]]] = []

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        states = (TrialState.COMPLETE, TrialState.PRUNED)
        self.views.append(
            {
                "_get_trials": summarize(
                    study._get_trials(deepcopy=False, states=states, use_cache=True)
                ),
                "get_trials": summarize(study.get_trials(deepcopy=False, states=states)),
                "trials": summarize([t for t in study.trials if t.state in states]),
            }
        )
        return param_distribution.low


def summarize(trials: list[FrozenTrial]) -> dict[int, tuple[float | None, dict[int, float]]]:
    return {t.number: (t.value, dict(t.intermediate_values)) for t in trials}


def add_trial(
    study: optuna.Study,
    state: TrialState,
    value: float | None,
    user_attrs: dict[str, Any],
    intermediate_values: dict[int, float],
) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=value,
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0.0, 1.0)},
            user_attrs=user_attrs,
            intermediate_values=intermediate_values,
        )
    )


def add_view_trials(study: optuna.Study) -> dict[int, tuple[float | None, dict[int, float]]]:
    """Add four finished trials and return their raw values and intermediate values."""
    # Trial 0 is fitted and has a score, so its value and last intermediate value move.
    add_trial(
        study,
        TrialState.COMPLETE,
        0.5,
        {SCORES: {DEFAULT_SCORE: 0.4}, FITTED: True},
        {0: 0.3, 1: 0.5},
    )
    # Trial 1 is not fitted, so it keeps its values however flat it is.
    add_trial(
        study, TrialState.COMPLETE, 0.6, {SCORES: {DEFAULT_SCORE: 0.9}, FITTED: False}, {0: 0.6}
    )
    # Trial 2 is fitted but has no scores, so it keeps its values.
    add_trial(study, TrialState.COMPLETE, 0.7, {FITTED: True}, {0: 0.7})
    # Trial 3 is pruned, fitted and has a score, so only its last intermediate value moves.
    add_trial(
        study,
        TrialState.PRUNED,
        None,
        {SCORES: {DEFAULT_SCORE: 0.2}, FITTED: True},
        {0: 0.1, 3: 0.2},
    )
    return {
        0: (0.5, {0: 0.3, 1: 0.5}),
        1: (0.6, {0: 0.6}),
        2: (0.7, {0: 0.7}),
        3: (None, {0: 0.1, 3: 0.2}),
    }


@pytest.mark.parametrize(("direction", "sign"), [("maximize", 1.0), ("minimize", -1.0)])
def test_sampler_view_shows_adjusted_values(
    optuna_storage: str, direction: str, sign: float
) -> None:
    recorder = RecordingSampler()
    weight = 0.5
    study = optuna.create_study(
        study_name="view",
        storage=optuna_storage,
        direction=direction,
        sampler=topselect.TopologicalSampler(recorder, weight=weight),
    )
    raw = add_view_trials(study)

    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    study.tell(trial, 0.0)

    expected = {
        0: (0.5 + sign * weight * 0.4, {0: 0.3, 1: 0.5 + sign * weight * 0.4}),
        1: raw[1],
        2: raw[2],
        3: (None, {0: 0.1, 3: 0.2 + sign * weight * 0.2}),
    }
    assert len(recorder.views) == 1
    for source, seen in recorder.views[0].items():
        assert seen.keys() == expected.keys(), source
        for number, (value, intermediate) in expected.items():
            seen_value, seen_intermediate = seen[number]
            assert seen_value == pytest.approx(value), f"{source}: trial {number} value"
            assert seen_intermediate == pytest.approx(intermediate), (
                f"{source}: trial {number} intermediate values"
            )


def test_sampler_view_leaves_storage_unchanged(optuna_storage: str) -> None:
    study = optuna.create_study(
        study_name="view",
        storage=optuna_storage,
        direction="maximize",
        sampler=topselect.TopologicalSampler(RecordingSampler(), weight=0.5),
    )
    raw = add_view_trials(study)

    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    study.tell(trial, 0.0)

    reloaded = optuna.load_study(study_name="view", storage=optuna_storage)
    assert summarize(reloaded.trials[:4]) == raw
    assert summarize(study.trials[:4]) == raw


def test_sampler_weight_zero_passes_study_itself(optuna_storage: str) -> None:
    recorder = RecordingSampler()
    study = optuna.create_study(
        storage=optuna_storage,
        direction="maximize",
        sampler=topselect.TopologicalSampler(recorder, weight=0),
    )
    raw = add_view_trials(study)

    study.ask().suggest_float("x", 0.0, 1.0)

    for source, seen in recorder.views[0].items():
        assert seen == raw, source


def test_sampler_multi_objective_weight_rejected(optuna_storage: str) -> None:
    study = optuna.create_study(
        study_name="pareto",
        storage=optuna_storage,
        directions=["minimize", "minimize"],
        sampler=topselect.TopologicalSampler(RecordingSampler(), weight=0.5),
    )
    trial = study.ask()

    with pytest.raises(topselect.InvalidInputError, match="'pareto' has 2 objectives"):
        trial.suggest_float("x", 0.0, 1.0)


@pytest.mark.parametrize("weight", [-0.1, math.nan, math.inf, "0.01", None])
def test_sampler_invalid_weight_rejected(weight: Any) -> None:
    with pytest.raises(topselect.InvalidInputError, match=re.escape(f"but got {weight!r}")):
        topselect.TopologicalSampler(weight=weight)


@pytest.mark.parametrize(
    ("base_sampler", "type_name"),
    [("tpe", "str"), (optuna.pruners.MedianPruner(), "MedianPruner"), (3, "int")],
)
def test_sampler_invalid_base_rejected(base_sampler: Any, type_name: str) -> None:
    with pytest.raises(
        topselect.InvalidInputError,
        match=f"base_sampler must be an optuna.samplers.BaseSampler, but got {type_name}",
    ):
        topselect.TopologicalSampler(base_sampler)


# -- pruner: the class rule ---------------------------------------------------------------

# Completed trials of a maximized study: class c0 ended far below the others. The median
# of all six values is (0.2 + 0.85) / 2 = 0.525.
POOR_CLASS = [("c0", 0.1), ("c0", 0.2), ("c0", 0.15)]
GOOD_TRIALS = [("c1", 0.9), (None, 0.95), ("c1", 0.85)]


def complete_trial(study: optuna.Study, class_id: str | None, value: float) -> None:
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    if class_id is not None:
        trial.set_user_attr(CLASS_ID, class_id)
    trial.report(value, 0)
    study.tell(trial, value)


def run_trial_until_pruner_decides(
    study: optuna.Study, class_id: str | None, steps: int, value: float
) -> tuple[bool, FrozenTrial]:
    """Report ``steps`` values of a trial in ``class_id`` and return the decision and trial."""
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    if class_id is not None:
        trial.set_user_attr(CLASS_ID, class_id)
    pruned = False
    for step in range(steps):
        trial.report(value, step)
        pruned = trial.should_prune()
        if pruned:
            break
    if pruned:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, value)
    return pruned, study.trials[trial.number]


def class_rule_study(
    storage: str,
    direction: str = "maximize",
    values: list[tuple[str | None, float]] | None = None,
    **pruner_options: Any,
) -> optuna.Study:
    options = {"min_class_members": 3, "margin": 0.05, "warmup_steps": 2} | pruner_options
    study = optuna.create_study(
        storage=storage,
        direction=direction,
        sampler=optuna.samplers.RandomSampler(seed=SEED),
        pruner=topselect.TopologicalPruner(optuna.pruners.NopPruner(), **options),
    )
    for class_id, value in values if values is not None else POOR_CLASS + GOOD_TRIALS:
        complete_trial(study, class_id, value)
    return study


@pytest.mark.parametrize(
    ("direction", "values", "median"),
    [
        ("maximize", POOR_CLASS + GOOD_TRIALS, 0.525),
        ("minimize", [(c, 1.0 - v) for c, v in POOR_CLASS + GOOD_TRIALS], 0.475),
    ],
)
def test_pruner_prunes_poor_class(
    optuna_storage: str, direction: str, values: list, median: float
) -> None:
    study = class_rule_study(optuna_storage, direction, values)

    pruned, trial = run_trial_until_pruner_decides(study, "c0", steps=5, value=0.5)

    assert pruned
    assert trial.state == TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [0, 1]  # pruned once warmup_steps=2 passed
    assert trial.user_attrs[PRUNE_REASON].startswith(
        f"class c0: all 3 completed members ended worse than the median {median:.6g} "
        "by more than 0.05"
    )


@pytest.mark.parametrize(
    ("case", "class_id", "pruner_options"),
    [
        ("trial without class", None, {}),
        ("class of good trials", "c1", {}),
        ("unknown class", "c9", {}),
        ("too few members", "c0", {"min_class_members": 4}),
        ("member within margin", "c0", {"margin": 0.35}),
        ("warmup not reached", "c0", {"warmup_steps": 6}),
    ],
)
def test_pruner_class_rule_keeps_trial(
    optuna_storage: str, case: str, class_id: str | None, pruner_options: dict
) -> None:
    study = class_rule_study(optuna_storage, **pruner_options)

    pruned, trial = run_trial_until_pruner_decides(study, class_id, steps=5, value=0.5)

    assert not pruned, case
    assert trial.state == TrialState.COMPLETE
    assert PRUNE_REASON not in trial.user_attrs


def test_pruner_base_pruner_reason_recorded(optuna_storage: str) -> None:
    study = optuna.create_study(
        storage=optuna_storage,
        direction="maximize",
        pruner=topselect.TopologicalPruner(optuna.pruners.ThresholdPruner(lower=0.5)),
    )

    pruned, trial = run_trial_until_pruner_decides(study, None, steps=3, value=0.1)

    assert pruned
    assert trial.user_attrs[PRUNE_REASON] == "ThresholdPruner at step 0"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base_pruner": TPESampler(seed=SEED)}, "but got TPESampler"),
        ({"min_class_members": 0}, "min_class_members must be >= 1, but got 0"),
        ({"margin": -0.5}, "margin must be a finite number >= 0, but got -0.5"),
        ({"margin": math.nan}, "margin must be a finite number >= 0, but got nan"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0, but got -1"),
    ],
)
def test_pruner_invalid_options_rejected(options: dict, message: str) -> None:
    with pytest.raises(topselect.InvalidInputError, match=re.escape(message)):
        topselect.TopologicalPruner(**options)
