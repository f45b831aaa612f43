"""Homotopy classes assigned by the trial tracker in real Optuna studies on sqlite.

Each trial trains the digits MLP of ``_trajectories`` (SGD, momentum 0.9, 8 epochs), so
runs at learning rate 0.05 that differ only in data order share a class. Classes are
read back from storage the way another worker would read them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F
from _trajectories import (
    BATCH_SIZE,
    EPOCHS,
    SMALL_LR,
    build_mlp,
    digits_data,
    digits_probe,
    make_tester,
)
from optuna.trial import TrialState

import topselect
from topselect.homotopy import ClassRegistry, LocalWaypointStore, assign_class
from topselect.search import study_classes
from topselect.search._classes import previous_decision, representatives_from_trials

CLASS_ID = "topselect.class_id"
CLASS_FINAL = "topselect.class_final"
CLASS_FRACTIONS = "topselect.class_fractions"
CLASS_MERGES = "topselect.class_merges"
REPRESENTATIVE = "topselect.class_representative"
WAYPOINTS_REF = "topselect.waypoints_ref"
WAYPOINTS_BYTES = "topselect.waypoints_bytes"
PAIR_TESTS = "topselect.class_pair_tests"
FIT_LOSS = 0.3


def _config(**options) -> topselect.TrackerConfig:
    settings = {
        "grid_size": 5,
        "trajectory_slice": False,
        "baselines": False,
        "fit_loss": FIT_LOSS,
    }
    return topselect.TrackerConfig(**(settings | options))


def _objective(store, config, waypoints_by_trial: dict, widths: dict[int, int] | None = None):
    """Return an objective that trains one run per trial and keeps its waypoints."""
    data = digits_data()
    probe = digits_probe()

    def objective(trial: optuna.Trial) -> float:
        width = (widths or {}).get(trial.number, 32)
        model = build_mlp(width)
        optimizer = torch.optim.SGD(model.parameters(), lr=SMALL_LR, momentum=0.9)
        order = torch.Generator().manual_seed(trial.number + 1)
        with topselect.track(
            trial, model, probe=probe, logger=False, config=config, waypoint_store=store
        ) as tracker:
            try:
                for epoch in range(EPOCHS):
                    for index in torch.randperm(len(data.x_train), generator=order).split(
                        BATCH_SIZE
                    ):
                        optimizer.zero_grad()
                        loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
                        loss.backward()
                        optimizer.step()
                    tracker.report(float(epoch), step=epoch, progress=(epoch + 1) / EPOCHS)
            finally:
                waypoints_by_trial[trial.number] = dict(tracker.recorder.waypoints)
            return tracker.finish(float(loss.detach()))

    return objective


def _run(storage: str, store, n_trials: int, config=None, pruner=None, widths=None):
    waypoints: dict[int, dict] = {}
    study = optuna.create_study(
        study_name="classes", storage=storage, pruner=pruner or optuna.pruners.NopPruner()
    )
    study.optimize(_objective(store, config or _config(), waypoints, widths), n_trials=n_trials)
    return study, waypoints


@pytest.fixture(scope="module")
def shared_study(tmp_path_factory: pytest.TempPathFactory):
    """Trials 0-2 at width 32 differing in data order, trial 3 at width 64."""
    directory = tmp_path_factory.mktemp("classes")
    storage = f"sqlite:///{directory / 'optuna.db'}"
    store = LocalWaypointStore(directory / "waypoints")
    _, waypoints = _run(storage, store, 4, widths={3: 64})
    return storage, directory, waypoints


def _load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="classes", storage=storage)


def test_study_data_order_trials_share_class(shared_study) -> None:
    storage, _, _ = shared_study
    trials = _load(storage).trials

    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all(t.user_attrs["topselect.fitted"] for t in trials)
    assert [t.user_attrs[CLASS_ID] for t in trials[:3]] == ["c0", "c0", "c0"]
    for trial in trials:
        assert trial.user_attrs[CLASS_FINAL] is True
        json.dumps(trial.user_attrs, allow_nan=False)
    assert trials[0].user_attrs[REPRESENTATIVE] is True
    assert trials[0].user_attrs[WAYPOINTS_BYTES] > 0
    for trial in trials[1:3]:
        assert REPRESENTATIVE not in trial.user_attrs
        assert WAYPOINTS_REF not in trial.user_attrs
        # Prefix decisions at 1/2, 5/8, 3/4 and 7/8, then the final one.
        assert trial.user_attrs[PAIR_TESTS] == 5
        assert trial.user_attrs[CLASS_FRACTIONS][-1] == "1"


def test_study_other_architecture_own_class(shared_study) -> None:
    storage, _, _ = shared_study
    trials = _load(storage).trials

    wide = trials[3]
    assert (
        wide.user_attrs["topselect.architecture"] != trials[0].user_attrs["topselect.architecture"]
    )
    assert wide.user_attrs[CLASS_ID] == "c3"
    assert wide.user_attrs[REPRESENTATIVE] is True
    assert wide.user_attrs["topselect.class_barriers"] == {}
    assert study_classes(_load(storage)) == {0: "c0", 1: "c0", 2: "c0", 3: "c3"}


def test_study_decision_reproducible_from_storage(shared_study) -> None:
    storage, directory, waypoints = shared_study
    trials = _load(storage).trials
    target = trials[2]

    # A fresh worker: a new store (empty cache) and the study read back from sqlite.
    reps = representatives_from_trials(
        _load(storage).trials,
        architecture=target.user_attrs["topselect.architecture"],
        probe_fingerprint=digits_probe().fingerprint,
        exclude=target.number,
    )
    sketches = {float(f): s for f, s in target.user_attrs["topselect.sketches"].items()}
    decision = assign_class(
        waypoints[target.number],
        {f: np.asarray(s) for f, s in sketches.items()},
        reps,
        LocalWaypointStore(directory / "waypoints").load,
        make_tester(),
    )

    assert decision.class_id == target.user_attrs[CLASS_ID]
    assert list(decision.witnessed) == ["c0"]
    stored_barrier = target.user_attrs["topselect.class_barriers"]["c0"]
    assert decision.barriers["c0"] == pytest.approx(stored_barrier, abs=1e-6)


def test_study_pruned_trial_keeps_prefix_class(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    store = LocalWaypointStore(tmp_path / "waypoints")
    # The reported value is the epoch index: trial 1 is pruned at epoch 6 (progress 7/8).
    pruner = optuna.pruners.ThresholdPruner(upper=5.5, n_warmup_steps=0)
    _run(storage, store, 1)
    study = optuna.load_study(study_name="classes", storage=storage, pruner=pruner)
    waypoints: dict[int, dict] = {}
    study.optimize(_objective(store, _config(), waypoints), n_trials=1)

    pruned = study.trials[1]
    assert pruned.state == TrialState.PRUNED
    assert max(waypoints[1]) == 0.875
    assert pruned.user_attrs[CLASS_ID] == "c0"
    assert pruned.user_attrs[CLASS_FINAL] is False
    assert pruned.user_attrs[CLASS_FRACTIONS] == [
        "0",
        "0.125",
        "0.25",
        "0.375",
        "0.5",
        "0.625",
        "0.75",
        "0.875",
    ]
    assert REPRESENTATIVE not in pruned.user_attrs
    assert sorted(pruned.user_attrs["topselect.sketches"]) == sorted(
        f"{f:g}" for f in waypoints[1]
    )
    assert study_classes(study) == {0: "c0", 1: "c0"}


def test_study_all_pairs_mode(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    store = LocalWaypointStore(tmp_path / "waypoints")

    study, _ = _run(storage, store, 3, config=_config(class_mode="all_pairs"))

    trials = study.trials
    assert all(t.user_attrs[REPRESENTATIVE] for t in trials)
    assert [t.user_attrs[CLASS_ID] for t in trials] == ["c0", "c1", "c2"]
    assert trials[1].user_attrs[CLASS_MERGES] == [["c1", "c0"]]
    # c0 and c1 are one class by then, so trial 2 is tested against one of them only.
    merges = trials[2].user_attrs[CLASS_MERGES]
    assert len(merges) == 1
    assert merges[0][0] == "c2"
    assert merges[0][1] in ("c0", "c1")
    assert study_classes(study) == {0: "c0", 1: "c0", 2: "c0"}


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"prefix_candidates": 0}, "prefix_candidates must be an integer >= 1, but got 0"),
        ({"max_candidates": 0}, "max_candidates must be an integer >= 1, but got 0"),
    ],
)
def test_tracker_config_invalid_candidates(options, pattern) -> None:
    with pytest.raises(topselect.InvalidInputError, match=pattern):
        _config(**options)


def test_tracker_config_class_defaults_match_registry() -> None:
    config = topselect.TrackerConfig()
    registry = ClassRegistry({})

    assert config.max_candidates == registry.max_candidates
    assert config.prefix_candidates == registry.prefix_candidates
    assert config.confirm_merges == registry.confirm_merges


def test_tracker_config_candidates_in_params() -> None:
    params = _config(max_candidates=7, prefix_candidates=2).to_params()

    assert params["max_candidates"] == 7
    assert params["prefix_candidates"] == 2


def test_study_float16_waypoints_half_size(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    store = LocalWaypointStore(tmp_path / "waypoints")

    study, _ = _run(storage, store, 1, config=_config(waypoint_dtype="float16"))

    attrs = study.trials[0].user_attrs
    n_parameters = sum(p.numel() for p in build_mlp().parameters())
    payload = 9 * n_parameters * 2
    assert payload <= attrs[WAYPOINTS_BYTES] <= payload + 512
    assert store.load(attrs[WAYPOINTS_REF])[1.0].dtype == torch.float32


# -- merges recorded in storage -----------------------------------------------------------


def _tell_trial(study: optuna.Study, attrs: dict, value: float | None = None) -> None:
    trial = study.ask()
    for key, item in attrs.items():
        trial.set_user_attr(key, item)
    trial.report(value if value is not None else 0.5, 0)
    study.tell(trial, value)


def test_study_classes_apply_merges(optuna_storage: str) -> None:
    study = optuna.create_study(storage=optuna_storage)
    _tell_trial(study, {CLASS_ID: "c0", REPRESENTATIVE: True}, 0.1)
    _tell_trial(study, {CLASS_ID: "c1", REPRESENTATIVE: True}, 0.2)
    _tell_trial(study, {CLASS_ID: "c1"}, 0.3)
    _tell_trial(study, {CLASS_ID: "c1", CLASS_MERGES: [["c1", "c0"]]}, 0.4)
    _tell_trial(study, {CLASS_ID: None}, 0.5)

    assert study_classes(study) == {0: "c0", 1: "c0", 2: "c0", 3: "c0", 4: None}
    assert previous_decision(study.trials[2].user_attrs).class_id == "c1"
    assert previous_decision(study.trials[4].user_attrs) is None


def test_pruner_counts_merged_class_members(optuna_storage: str) -> None:
    pruner = topselect.TopologicalPruner(
        optuna.pruners.NopPruner(), min_class_members=3, margin=0.05, warmup_steps=1
    )
    study = optuna.create_study(storage=optuna_storage, direction="maximize", pruner=pruner)
    # c0 and c1 are one class: its three members all ended far below the median.
    _tell_trial(study, {CLASS_ID: "c0", REPRESENTATIVE: True}, 0.1)
    _tell_trial(study, {CLASS_ID: "c1", REPRESENTATIVE: True}, 0.15)
    _tell_trial(study, {CLASS_ID: "c1", CLASS_MERGES: [["c1", "c0"]]}, 0.2)
    for value in (0.9, 0.95, 0.85):
        _tell_trial(study, {}, value)

    trial = study.ask()
    trial.set_user_attr(CLASS_ID, "c1")
    trial.report(0.5, 0)

    assert trial.should_prune()
    reason = study.trials[-1].user_attrs["topselect.prune_reason"]
    assert reason.startswith("class c0: all 3 completed members ended worse than the median")
    assert math.isfinite(study.trials[0].values[0])
