"""The study view TopologicalSampler hands its base sampler, the ranking rule it shares
with ``rank_trials``, and the module that contains every private Optuna call.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import tomllib
from pathlib import Path
from typing import Any

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import FloatDistribution
from optuna.samplers import RandomSampler
from optuna.trial import FrozenTrial, TrialState

import topselect
from topselect.search import DEFAULT_SCORE, TrialRecord, _optuna_compat, rank_records

SCORES = "topselect.scores"
FITTED = "topselect.fitted"
CLASS_ID = "topselect.class_id"
REPOSITORY = Path(__file__).resolve().parents[2]


# -- hooks -----------------------------------------------------------------------------------


class HookRecordingSampler(RandomSampler):
    """RandomSampler that records which hook ran and which trial values it was shown."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.calls: list[tuple[str, dict[int, float | None]]] = []
        self._lock = threading.Lock()

    def _record(self, hook: str, study: optuna.Study | None) -> None:
        values = {}
        if study is not None:
            finished = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            values = {t.number: t.value for t in finished}
        with self._lock:
            self.calls.append((hook, values))

    def infer_relative_search_space(self, study, trial):
        self._record("infer_relative_search_space", study)
        return super().infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        self._record("sample_relative", study)
        return super().sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        self._record("sample_independent", study)
        return super().sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self._record("before_trial", study)
        super().before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self._record("after_trial", study)
        super().after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._record("reseed_rng", None)
        super().reseed_rng()


def fitted_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr(SCORES, {DEFAULT_SCORE: 1.0})
    trial.set_user_attr(FITTED, True)
    return x


def test_sampler_forwards_six_hooks(optuna_storage: str) -> None:
    base = HookRecordingSampler(seed=0)
    study = optuna.create_study(
        storage=optuna_storage,
        direction="minimize",
        sampler=topselect.TopologicalSampler(base, weight=0.5),
    )

    # Two threads make Optuna reseed the sampler's generator, once per thread.
    study.optimize(fitted_objective, n_trials=4, n_jobs=2)

    hooks = {hook for hook, _ in base.calls}
    assert hooks == {
        "infer_relative_search_space",
        "sample_relative",
        "sample_independent",
        "before_trial",
        "after_trial",
        "reseed_rng",
    }
    raw = {t.number: t.value for t in study.trials}
    for hook, seen in base.calls:
        for number, value in seen.items():
            if hook in ("before_trial", "after_trial"):
                # Hooks that do not sample see the study itself, with raw values.
                assert value == raw[number], (hook, number)
            else:
                assert value == pytest.approx(raw[number] - 0.5), (hook, number)


# -- the view of pruned trials ---------------------------------------------------------------


class ViewRecordingSampler(RandomSampler):
    """RandomSampler that keeps the trials its last ``sample_independent`` call was shown."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.seen: dict[str, list[FrozenTrial]] = {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        states = (TrialState.PRUNED,)
        self.seen = {
            "_get_trials": study._get_trials(deepcopy=False, states=states, use_cache=True),
            "get_trials": study.get_trials(deepcopy=False, states=states),
            "trials": [t for t in study.trials if t.state in states],
        }
        return super().sample_independent(study, trial, param_name, param_distribution)


@pytest.mark.parametrize(("direction", "sign"), [("maximize", 1.0), ("minimize", -1.0)])
def test_sampler_view_pruned_value_follows_intermediate(
    optuna_storage: str, direction: str, sign: float
) -> None:
    recorder = ViewRecordingSampler()
    study = optuna.create_study(
        storage=optuna_storage,
        direction=direction,
        sampler=topselect.TopologicalSampler(recorder, weight=0.5),
    )
    pruned = study.ask({"x": FloatDistribution(0.0, 1.0)})
    pruned.set_user_attr(SCORES, {DEFAULT_SCORE: 0.4})
    pruned.set_user_attr(FITTED, True)
    pruned.report(0.3, 0)
    pruned.report(0.6, 1)
    # Optuna stores the last intermediate value as a pruned trial's value.
    study.tell(pruned, state=TrialState.PRUNED)
    assert study.trials[0].value == 0.6

    study.ask().suggest_float("x", 0.0, 1.0)

    expected = 0.6 + sign * 0.5 * 0.4
    for source, trials in recorder.seen.items():
        (seen,) = trials
        assert seen.value == pytest.approx(expected), source
        assert seen.intermediate_values == pytest.approx({0: 0.3, 1: expected}), source
    assert study.trials[0].value == 0.6
    assert study.trials[0].intermediate_values == {0: 0.3, 1: 0.6}


# -- the ranking rule --------------------------------------------------------------------------

record_strategy = st.builds(
    TrialRecord,
    number=st.integers(0, 10_000),
    state=st.sampled_from(["COMPLETE", "PRUNED", "FAIL"]),
    value=st.floats(-10, 10),
    last_intermediate=st.floats(-10, 10),
    scores=st.dictionaries(
        st.just(DEFAULT_SCORE),
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    ),
    fitted=st.sampled_from([True, False, None]),
)


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(record_strategy, min_size=2, max_size=8, unique_by=lambda r: r.number),
    weight=st.floats(0, 100),
    maximize=st.booleans(),
)
def test_ranking_never_lifts_unfitted_above_fitted(
    records: list[TrialRecord], weight: float, maximize: bool
) -> None:
    raw = {e.record.number: e.rank for e in rank_records(records, maximize=maximize, weight=0)}
    adjusted = {
        e.record.number: e.rank for e in rank_records(records, maximize=maximize, weight=weight)
    }
    fitted = [r.number for r in records if r.fitted is True and raw[r.number] is not None]
    others = [r.number for r in records if r.fitted is not True and raw[r.number] is not None]
    for f in fitted:
        for u in others:
            if raw[f] < raw[u]:
                assert adjusted[f] < adjusted[u], (f, u)


def test_ranking_negative_score_counts_as_zero(caplog: pytest.LogCaptureFixture) -> None:
    records = [
        TrialRecord(0, "COMPLETE", 0.50, scores={"signed": -3.0}, fitted=True),
        TrialRecord(1, "COMPLETE", 0.49, scores={"signed": 0.0}, fitted=False),
        TrialRecord(2, "COMPLETE", 0.40, scores={"signed": -1.0}, fitted=True),
    ]

    with caplog.at_level(logging.WARNING, logger="topselect.search._ranking"):
        ranking = rank_records(records, maximize=True, weight=1.0, score="signed")
        rank_records(records, maximize=True, weight=1.0, score="signed")

    assert [e.record.number for e in ranking] == [0, 1, 2]
    assert [e.bonus for e in ranking] == [0.0, 0.0, 0.0]
    assert ranking[0].evidence == "signed=-3 < 0 counted as 0: raw value"
    warnings = [r for r in caplog.records if "'signed' is negative" in r.getMessage()]
    assert len(warnings) == 1, "the warning is logged once per score name"


# -- the pruner on missing data --------------------------------------------------------------


def test_pruner_class_without_reports_kept(optuna_storage: str) -> None:
    study = optuna.create_study(
        storage=optuna_storage,
        direction="maximize",
        pruner=topselect.TopologicalPruner(
            optuna.pruners.NopPruner(), min_class_members=1, warmup_steps=0
        ),
    )
    for value in (0.1, 0.9, 0.8):
        trial = study.ask({"x": FloatDistribution(0.0, 1.0)})
        trial.set_user_attr(CLASS_ID, "c0" if value < 0.5 else "c1")
        study.tell(trial, value)
    running = study.ask({"x": FloatDistribution(0.0, 1.0)})
    running.set_user_attr(CLASS_ID, "c0")

    # Class c0 meets the rule, but the trial has reported nothing to prune on.
    assert running.should_prune() is False
    assert "topselect.prune_reason" not in study.trials[running.number].user_attrs


# -- the private Optuna API --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "in_range"),
    [
        ("5.0.0", True),
        ("5.1.0", True),
        ("5.1.3", True),
        ("5.1.0rc1", True),
        ("5.1.0.dev0", True),
        ("4.9.1", False),
        ("5.2.0", False),
        ("6.0.0", False),
    ],
)
def test_compat_version_range(
    version: str, in_range: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="topselect.search._optuna_compat"):
        assert _optuna_compat.check_version(version) is in_range

    messages = [r.getMessage() for r in caplog.records]
    if in_range:
        assert not messages
    else:
        assert messages == [
            f"Optuna {version} is outside the range topselect was tested with (>=5.0,<5.2); "
            "the sampler and pruner rely on private Optuna methods that may have changed."
        ]


def test_compat_range_matches_dependency_pin() -> None:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    pins = [d for d in project["project"]["dependencies"] if d.startswith("optuna")]
    low, high = _optuna_compat.TESTED_RANGE

    assert pins == [f"optuna>={low},<{high}"]
    assert _optuna_compat.check_version(), f"installed Optuna {optuna.__version__}"


class OptunaWithoutPrivateApi:
    """Stands for a study or trial of an Optuna release that renamed its private members."""


@pytest.mark.parametrize(
    ("call", "missing"),
    [
        (lambda: _optuna_compat.get_trials(OptunaWithoutPrivateApi()), "_get_trials"),
        (
            lambda: _optuna_compat.set_running_trial_user_attr(
                OptunaWithoutPrivateApi(), OptunaWithoutPrivateApi(), "key", 1.0
            ),
            "_storage",
        ),
        (lambda: _optuna_compat.stored_user_attrs(OptunaWithoutPrivateApi()), "study"),
    ],
    ids=["get_trials", "set_running_trial_user_attr", "stored_user_attrs"],
)
def test_compat_missing_private_api_raises(call: Any, missing: str) -> None:
    low, high = _optuna_compat.TESTED_RANGE

    with pytest.raises(topselect.IncompatibleVersionError) as raised:
        call()

    message = str(raised.value)
    assert message.startswith(
        f"Optuna {optuna.__version__} no longer offers a private interface topselect uses"
    )
    assert missing in message
    assert f"pip install 'optuna>={low},<{high}'" in message
    assert isinstance(raised.value, topselect.TopselectError)


def test_compat_view_keeps_cached_trials(optuna_storage: str) -> None:
    study = optuna.create_study(storage=optuna_storage)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=2)
    study._thread_local.cached_all_trials = None
    view = _optuna_compat.AdjustedStudyView(study, lambda t: t)

    first = view._get_trials(deepcopy=False, use_cache=True)

    # The view filled the study's own per-thread cache, which the next sampler call reuses.
    assert study._thread_local.cached_all_trials is not None
    assert [t.number for t in first] == [0, 1]
    assert view.study_name == study.study_name
    assert math.isfinite(view.trials[0].value)


def test_compat_view_rejects_unset_attributes() -> None:
    view = _optuna_compat.AdjustedStudyView.__new__(_optuna_compat.AdjustedStudyView)

    with pytest.raises(AttributeError, match=re.escape("_study")):
        view.study_name  # noqa: B018
