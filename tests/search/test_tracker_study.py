"""A real tracked study on sqlite storage: the trial attributes and ``rank_trials``.

Most tests read the shared study of ``tests/conftest.py`` (trials 0 and 2 fitted, trial
1 pruned, trial 3 completed unfitted, trials 4 and 5 sampled by TPE) afresh from its
sqlite storage, where Optuna stores attributes as JSON.
"""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

import topselect
from topselect.search import DEFAULT_SCORE

SEED = 0

SCORES = "topselect.scores"
FITTED = "topselect.fitted"
TRAIN_LOSS = "topselect.train_loss"
CLASS_ID = "topselect.class_id"
PRUNE_REASON = "topselect.prune_reason"
PLANE_SCORES = "topselect.plane_scores"
BASELINES = "topselect.baselines"
BASELINE_NAMES = ("hessian_trace", "hessian_top_eigenvalue", "asam_sharpness")


def trial_by_params(study: optuna.Study, params: dict) -> optuna.trial.FrozenTrial:
    matches = [t for t in study.trials if t.params == params]
    assert len(matches) == 1, f"expected one trial with params {params}, found {len(matches)}"
    return matches[0]


# -- trial attributes --------------------------------------------------------------------


def test_study_runs_every_trial(tracked_study) -> None:
    study = tracked_study.load()

    assert len(study.trials) == tracked_study.n_trials
    for params in tracked_study.enqueued_params:
        trial_by_params(study, params)


def test_study_user_attrs_are_strict_json(tracked_study) -> None:
    study = tracked_study.load()

    # allow_nan=False: NaN and inf are not JSON, and another reader would reject them.
    json.dumps(study.user_attrs, allow_nan=False)
    for trial in study.trials:
        json.dumps(trial.user_attrs, allow_nan=False)
        json.dumps(trial.system_attrs, allow_nan=False)


def test_completed_trials_have_topology_attrs(tracked_study) -> None:
    completed = tracked_study.load().get_trials(states=(TrialState.COMPLETE,))

    assert completed
    for trial in completed:
        attrs = trial.user_attrs
        for key in (SCORES, FITTED, TRAIN_LOSS, CLASS_ID):
            assert key in attrs, f"trial {trial.number} lacks {key}"
        assert isinstance(attrs[SCORES], dict)
        assert isinstance(attrs[SCORES][DEFAULT_SCORE], float)
        assert isinstance(attrs[FITTED], bool)
        assert isinstance(attrs[TRAIN_LOSS], float)
        assert math.isfinite(attrs[TRAIN_LOSS])
        assert PRUNE_REASON not in attrs


def test_completed_trials_have_plane_and_baselines(tracked_study) -> None:
    completed = tracked_study.load().get_trials(states=(TrialState.COMPLETE,))

    for trial in completed:
        attrs = trial.user_attrs
        assert isinstance(attrs[PLANE_SCORES][DEFAULT_SCORE], float)
        assert attrs[PLANE_SCORES]["center_loss"] == attrs[SCORES]["center_loss"]
        for name in BASELINE_NAMES:
            assert isinstance(attrs[BASELINES][name], float), f"trial {trial.number}: {name}"
            assert attrs[BASELINES][f"{name}_seconds"] > 0


def test_fitted_trial_founds_homotopy_class(tracked_study) -> None:
    trial = trial_by_params(tracked_study.load(), tracked_study.fitted_params)

    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs[FITTED] is True
    assert trial.user_attrs[TRAIN_LOSS] <= topselect.TrackerConfig().fit_loss
    assert trial.user_attrs[CLASS_ID] == f"c{trial.number}"
    assert trial.user_attrs["topselect.class_representative"] is True


def test_unfitted_trial_has_no_class(tracked_study) -> None:
    trial = trial_by_params(tracked_study.load(), tracked_study.unfitted_params)

    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs[FITTED] is False
    assert trial.user_attrs[TRAIN_LOSS] > topselect.TrackerConfig().fit_loss
    assert trial.user_attrs[CLASS_ID] is None


def test_pruned_trial_records_prune_reason(tracked_study) -> None:
    trial = trial_by_params(tracked_study.load(), tracked_study.pruned_params)

    assert trial.state == TrialState.PRUNED
    step = tracked_study.prune_step
    assert trial.user_attrs[PRUNE_REASON] == f"ThresholdPruner at step {step}"
    assert sorted(trial.intermediate_values) == list(range(step + 1))
    assert trial.user_attrs[FITTED] is False
    assert SCORES not in trial.user_attrs


def test_every_pruned_trial_has_reason(tracked_study) -> None:
    pruned = tracked_study.load().get_trials(states=(TrialState.PRUNED,))

    assert pruned
    for trial in pruned:
        assert trial.user_attrs[PRUNE_REASON].startswith("ThresholdPruner at step ")


# -- rank_trials on the tracked study ---------------------------------------------------


def test_rank_trials_completed_before_pruned(tracked_study) -> None:
    ranking = topselect.rank_trials(tracked_study.load())
    states = [entry.record.state for entry in ranking]

    assert states == sorted(states, key=["COMPLETE", "PRUNED"].index)
    assert [entry.rank for entry in ranking] == list(range(1, len(ranking) + 1))


def test_rank_trials_pruned_by_last_intermediate(tracked_study) -> None:
    study = tracked_study.load()
    ranking = topselect.rank_trials(study)

    for entry in ranking:
        if entry.record.state != "PRUNED":
            continue
        intermediate = study.trials[entry.record.number].intermediate_values
        assert entry.ranked_value == intermediate[max(intermediate)]


def test_rank_trials_weight_zero_raw_order(tracked_study) -> None:
    sampler = topselect.TopologicalSampler(optuna.samplers.TPESampler(seed=SEED), weight=0)
    study = tracked_study.load(sampler=sampler)
    ranking = topselect.rank_trials(study)

    def last_intermediate(trial: optuna.trial.FrozenTrial) -> float:
        return trial.intermediate_values[max(trial.intermediate_values)]

    completed = sorted(
        study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: (-t.value, t.number)
    )
    pruned = sorted(
        study.get_trials(states=(TrialState.PRUNED,)),
        key=lambda t: (-last_intermediate(t), t.number),
    )
    assert [e.record.number for e in ranking] == [t.number for t in completed + pruned]
    for entry in ranking:
        assert entry.adjusted_value == entry.ranked_value
        assert entry.bonus == 0.0


def test_rank_trials_unfitted_gets_no_bonus(tracked_study) -> None:
    ranking = topselect.rank_trials(tracked_study.load())

    for entry in ranking:
        if entry.record.fitted is not True:
            assert entry.bonus == 0.0, f"trial {entry.record.number}: {entry.evidence}"
            assert entry.adjusted_value == entry.ranked_value


def test_rank_trials_fitted_gets_score_bonus(tracked_study) -> None:
    ranking = topselect.rank_trials(tracked_study.load(), weight=0.01)

    fitted = [e for e in ranking if e.record.fitted is True and e.record.state == "COMPLETE"]
    assert fitted
    for entry in fitted:
        score = entry.record.scores[DEFAULT_SCORE]
        assert entry.adjusted_value == pytest.approx(entry.ranked_value + 0.01 * score)


# -- rank_trials on hand-built trials ----------------------------------------------------


def add_trial(
    study: optuna.Study,
    state: TrialState,
    value: float | None,
    user_attrs: dict,
    intermediate_values: dict[int, float] | None = None,
) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=value,
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0.0, 1.0)},
            user_attrs=user_attrs,
            intermediate_values=intermediate_values or {},
        )
    )


@pytest.mark.parametrize(
    ("direction", "unfitted_value", "fitted_value"),
    [("maximize", 0.900, 0.895), ("minimize", 0.100, 0.105)],
)
def test_rank_trials_flat_unfitted_not_lifted(
    optuna_storage: str, direction: str, unfitted_value: float, fitted_value: float
) -> None:
    study = optuna.create_study(
        storage=optuna_storage,
        direction=direction,
        sampler=topselect.TopologicalSampler(seed=SEED, weight=0.01),
    )
    flattest = {DEFAULT_SCORE: 1.0}
    add_trial(study, TrialState.COMPLETE, unfitted_value, {SCORES: flattest, FITTED: False})
    add_trial(study, TrialState.COMPLETE, fitted_value, {SCORES: flattest, FITTED: True})
    add_trial(study, TrialState.COMPLETE, unfitted_value, {SCORES: flattest})  # fitted unknown

    ranking = topselect.rank_trials(study)

    assert [entry.record.number for entry in ranking] == [1, 0, 2]
    assert ranking[0].bonus == pytest.approx(0.01)
    assert ranking[1].adjusted_value == unfitted_value
    assert ranking[1].evidence == "not fitted: raw value"
    assert ranking[2].adjusted_value == unfitted_value
    assert ranking[2].bonus == 0.0


def test_rank_trials_failed_trials_unranked(optuna_storage: str) -> None:
    study = optuna.create_study(storage=optuna_storage, direction="maximize")
    add_trial(study, TrialState.FAIL, None, {})
    add_trial(study, TrialState.PRUNED, None, {}, intermediate_values={0: 0.9})
    add_trial(study, TrialState.COMPLETE, 0.1, {})

    ranking = topselect.rank_trials(study)

    assert [(e.record.number, e.rank) for e in ranking] == [(2, 1), (1, 2), (0, None)]


def test_rank_trials_rejects_multi_objective(optuna_storage: str) -> None:
    study = optuna.create_study(
        study_name="two-objectives", storage=optuna_storage, directions=["minimize", "maximize"]
    )

    with pytest.raises(topselect.InvalidInputError, match="'two-objectives' has 2 objectives"):
        topselect.rank_trials(study)
