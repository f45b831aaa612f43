"""Contract tests: every built-in Optuna sampler and pruner inside topselect's wrappers.

The objective is a plain function, so each study takes milliseconds per trial. It writes
the attributes the trial tracker would write (flatness scores, the fitted flag), reports
intermediate values and prunes some trials itself, so the sampler's view has completed,
pruned, fitted and unfitted trials to adjust.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import pytest
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

import topselect
from topselect.search import DEFAULT_SCORE

SCORES = "topselect.scores"
FITTED = "topselect.fitted"
PRUNE_REASON = "topselect.prune_reason"
RAW_VALUE = "test.raw_value"

N_TRIALS = 12
KIND_COST = {"a": 0.0, "b": 0.5, "c": 1.0}


@pytest.fixture(autouse=True)
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial INFO logs and its experimental-feature warnings."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
    optuna.logging.set_verbosity(verbosity)


# -- objectives ----------------------------------------------------------------------------


def suggest(trial: optuna.Trial) -> tuple[float, int, str]:
    # A stepped float keeps the space finite, so BruteForceSampler can enumerate it.
    x = trial.suggest_float("x", -3.0, 3.0, step=0.25)
    n = trial.suggest_int("n", 1, 8)
    kind = trial.suggest_categorical("kind", list(KIND_COST))
    return x, n, kind


def objective(trial: optuna.Trial) -> float:
    """Minimize ``(x - 1)^2 + 0.1 n + cost(kind)``, with tracker-like attributes.

    The flatness score grows with ``|x - 1|``, away from the optimum, so a positive weight
    changes which trials look best. Trials with ``n`` divisible by 3 are not fitted, and
    trials with ``n >= 6`` are pruned after their third report.
    """
    x, n, kind = suggest(trial)
    value = (x - 1.0) ** 2 + 0.1 * n + KIND_COST[kind]
    trial.set_user_attr(SCORES, {DEFAULT_SCORE: min(1.0, abs(x - 1.0) / 4.0)})
    trial.set_user_attr(FITTED, n % 3 != 0)
    trial.set_user_attr(RAW_VALUE, value)
    for step in range(3):
        trial.report(value + 1.0 / (step + 1), step)
    if n >= 6:
        raise optuna.TrialPruned()
    return value


def two_objectives(trial: optuna.Trial) -> tuple[float, float]:
    """Two conflicting objectives; Optuna stores no intermediate values for such studies."""
    x, n, kind = suggest(trial)
    return (x - 1.0) ** 2 + KIND_COST[kind], (x + 1.0) ** 2 + 0.1 * n


# -- samplers ------------------------------------------------------------------------------

SamplerFactory = Callable[[int], BaseSampler]

# Each factory makes a fresh, seeded sampler, with startup phases short enough that the
# model-based phase starts within N_TRIALS.
SAMPLERS: dict[str, SamplerFactory] = {
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
    "tpe-multivariate": lambda seed: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=4, multivariate=True
    ),
    "tpe-constant-liar": lambda seed: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=4, constant_liar=True
    ),
    "tpe-multivariate-constant-liar": lambda seed: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=4, multivariate=True, constant_liar=True
    ),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed, n_startup_trials=4),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(
        seed=seed, n_startup_trials=2, popsize=4, warn_independent_sampling=False
    ),
    "cmaes-pruned-trials": lambda seed: optuna.samplers.CmaEsSampler(
        seed=seed,
        n_startup_trials=2,
        popsize=4,
        consider_pruned_trials=True,
        warn_independent_sampling=False,
    ),
    "nsgaii": lambda seed: optuna.samplers.NSGAIISampler(seed=seed, population_size=4),
    "qmc": lambda seed: optuna.samplers.QMCSampler(
        seed=seed, scramble=True, warn_independent_sampling=False
    ),
    "bruteforce": lambda seed: optuna.samplers.BruteForceSampler(seed=seed),
}

# Samplers whose suggestions do not depend on objective values.
VALUE_BLIND = {"random", "qmc", "bruteforce"}

MULTI_OBJECTIVE_SAMPLERS = ("random", "tpe", "nsgaii")


def run_study(
    sampler: BaseSampler,
    study_objective: Callable[..., Any] = objective,
    directions: tuple[str, ...] = ("minimize",),
    pruner: BasePruner | None = None,
) -> optuna.Study:
    study = optuna.create_study(
        study_name="contract", directions=list(directions), sampler=sampler, pruner=pruner
    )
    study.optimize(study_objective, n_trials=N_TRIALS)
    return study


def outcomes(study: optuna.Study) -> list[tuple[dict[str, Any], str, dict[int, float]]]:
    return [(t.params, t.state.name, t.intermediate_values) for t in study.trials]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract_sampler_weight_zero_matches_base(name: str) -> None:
    factory = SAMPLERS[name]

    bare = run_study(factory(0))
    wrapped = run_study(topselect.TopologicalSampler(factory(0), weight=0))

    assert outcomes(wrapped) == outcomes(bare)
    states = [t.state for t in wrapped.trials]
    assert TrialState.PRUNED in states, "the objective should prune some trials"
    assert TrialState.COMPLETE in states


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract_sampler_positive_weight_finishes(name: str) -> None:
    factory = SAMPLERS[name]

    bare = run_study(factory(0))
    weighted = run_study(topselect.TopologicalSampler(factory(0), weight=5.0))

    assert len(weighted.trials) == N_TRIALS
    for trial in weighted.trials:
        assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED), trial.number
        if trial.state == TrialState.COMPLETE:
            # The adjusted values live only in the sampler's view, never in storage.
            assert trial.value == trial.user_attrs[RAW_VALUE], trial.number
    if name in VALUE_BLIND:
        assert outcomes(weighted) == outcomes(bare)
    else:
        # The adjustment reached the base sampler and changed what it suggested.
        assert [t.params for t in weighted.trials] != [t.params for t in bare.trials]


@pytest.mark.parametrize("name", MULTI_OBJECTIVE_SAMPLERS)
def test_contract_multi_objective_weight_zero_matches_base(name: str) -> None:
    factory = SAMPLERS[name]
    directions = ("minimize", "minimize")

    bare = run_study(factory(0), two_objectives, directions)
    wrapped = run_study(
        topselect.TopologicalSampler(factory(0), weight=0), two_objectives, directions
    )

    assert [(t.params, t.values) for t in wrapped.trials] == [
        (t.params, t.values) for t in bare.trials
    ]


def test_contract_multi_objective_weight_rejected() -> None:
    study = optuna.create_study(
        study_name="pareto",
        directions=["minimize", "minimize"],
        sampler=topselect.TopologicalSampler(SAMPLERS["nsgaii"](0), weight=0.5),
    )

    with pytest.raises(topselect.InvalidInputError, match="'pareto' has 2 objectives"):
        study.optimize(two_objectives, n_trials=3)

    # Optuna fails the trial whose objective raised, so none is left RUNNING.
    assert [t.state for t in study.trials] == [TrialState.FAIL]


# -- pruners -------------------------------------------------------------------------------

PRUNER_STEPS = 8

PRUNERS: dict[str, Callable[[], BasePruner]] = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    "percentile": lambda: optuna.pruners.PercentilePruner(
        25.0, n_startup_trials=2, n_warmup_steps=1
    ),
    "successive-halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=2
    ),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=PRUNER_STEPS, reduction_factor=2
    ),
    "patient": lambda: optuna.pruners.PatientPruner(
        optuna.pruners.MedianPruner(n_startup_trials=2), patience=1
    ),
    "threshold": lambda: optuna.pruners.ThresholdPruner(upper=3.0, n_warmup_steps=1),
    "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.2, n_startup_steps=2),
    "nop": lambda: optuna.pruners.NopPruner(),
}


def learning_curve(trial: optuna.Trial) -> float:
    """Report a learning curve that falls towards ``(x - 1)^2 + 0.1 n + cost(kind)``.

    The curve at each step differs between trials, so both rank-based pruners and the
    Wilcoxon test (which treats steps as paired instances) have something to decide on.
    Curves of kind ``c`` rise again after the second step, as an overfitting run's
    validation loss does, which PatientPruner needs before it prunes.
    """
    x, n, kind = suggest(trial)
    final = (x - 1.0) ** 2 + 0.1 * n + KIND_COST[kind]
    drift = 0.3 if kind == "c" else 0.0
    value = final
    for step in range(PRUNER_STEPS):
        value = final + (1.0 + 0.1 * math.sin(step + n)) / (step + 1) + drift * step
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


@pytest.mark.parametrize("name", list(PRUNERS))
def test_contract_pruner_matches_base_without_classes(name: str) -> None:
    factory = PRUNERS[name]

    bare = run_study(SAMPLERS["tpe"](0), learning_curve, pruner=factory())
    wrapped = run_study(
        SAMPLERS["tpe"](0), learning_curve, pruner=topselect.TopologicalPruner(factory())
    )

    # No trial has a homotopy class, so the class rule never fires and every decision
    # is the base pruner's, at the same step.
    assert outcomes(wrapped) == outcomes(bare)
    pruned = [t for t in wrapped.trials if t.state == TrialState.PRUNED]
    if name == "nop":
        assert not pruned
    else:
        assert pruned, f"{name} pruned nothing, so the comparison shows nothing"
    base_name = type(factory()).__name__
    for trial in wrapped.trials:
        if trial.state == TrialState.PRUNED:
            assert trial.user_attrs[PRUNE_REASON] == f"{base_name} at step {trial.last_step}"
        else:
            assert PRUNE_REASON not in trial.user_attrs


@pytest.mark.parametrize("wrapped", [True, False], ids=["topological-pruner", "base-pruner"])
@pytest.mark.parametrize("name", list(PRUNERS))
def test_contract_pruner_with_topological_sampler(name: str, wrapped: bool) -> None:
    # HyperbandPruner (bare) hands samplers its own bracket view of the study, which the
    # sampler's adjusted view then wraps.
    sampler = topselect.TopologicalSampler(SAMPLERS["tpe"](0), weight=5.0)
    pruner = topselect.TopologicalPruner(PRUNERS[name]()) if wrapped else PRUNERS[name]()

    study = run_study(sampler, learning_curve, pruner=pruner)

    assert len(study.trials) == N_TRIALS
    assert {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
