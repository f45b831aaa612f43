"""Several processes on one study: shared storages, and decisions taken from storage alone.

Workers are real Python processes started with ``subprocess`` (see ``_workers.py``), on
real storages: a sqlite file, a journal file and a fresh PostgreSQL database on
127.0.0.1:5432 (skipped when the server is unreachable).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _workers
import optuna
import pytest
import torch.nn.functional as F
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

import topselect
from topselect.homotopy import LocalWaypointStore
from topselect.search import DEFAULT_SCORE

WORKER_SCRIPT = Path(_workers.__file__)
WORKER_TIMEOUT_S = 300

N_WORKERS = 4
TRIALS_PER_WORKER = 4

SCORES = "topselect.scores"
FITTED = "topselect.fitted"
CLASS_ID = "topselect.class_id"
CLASS_FINAL = "topselect.class_final"
CLASS_BARRIERS = "topselect.class_barriers"
CLASS_FRACTIONS = "topselect.class_fractions"
REPRESENTATIVE = "topselect.class_representative"
WAYPOINTS_REF = "topselect.waypoints_ref"
PRUNE_REASON = "topselect.prune_reason"


def start_worker(command: str, argument: dict[str, Any], hash_seed: int) -> subprocess.Popen:
    environment = {
        **os.environ,
        # Distinct string hashing per process: a decision that depended on set or dict
        # order of strings would differ between them.
        "PYTHONHASHSEED": str(hash_seed),
        # Two cores are shared by all workers; more threads per worker only contend.
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT), command, json.dumps(argument)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def collect(processes: list[subprocess.Popen]) -> list[dict[str, Any]]:
    """Wait for every process and return the JSON each printed; fail with its stderr."""
    results = []
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert process.returncode == 0, f"worker exited {process.returncode}:\n{stderr}"
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


STORAGE_KINDS = ("sqlite", "journal", "postgresql")


@dataclass(frozen=True)
class SharedRun:
    """One study per storage kind, each run by the same ``N_WORKERS`` worker processes.

    Attributes:
        studies: Per kind, what each worker was given (storage, study name, directories).
        results: What each worker printed: its number and the trials it ran, by kind.
        seconds: Wall time from starting the workers to the last one's exit.
        skipped: Per storage kind left out, the reason.
    """

    studies: dict[str, dict[str, Any]]
    results: list[dict[str, Any]]
    seconds: float
    skipped: dict[str, str]


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """Run ``N_WORKERS`` processes, each taking its share of trials on every storage."""
    directory = tmp_path_factory.mktemp("shared-run")
    specs: dict[str, dict[str, str]] = {
        "sqlite": {"kind": "sqlite", "url": f"sqlite:///{directory / 'optuna.db'}"},
        "journal": {"kind": "journal", "path": str(directory / "optuna.journal")},
    }
    skipped = {}
    try:
        specs["postgresql"] = {
            "kind": "postgresql",
            "url": request.getfixturevalue("postgres_url"),
        }
    except pytest.skip.Exception as error:
        skipped["postgresql"] = str(error)
    studies = {}
    for kind, spec in specs.items():
        study_name = f"shared-{uuid.uuid4().hex[:12]}"
        optuna.create_study(
            study_name=study_name, storage=_workers.open_storage(spec), direction="minimize"
        )
        studies[kind] = {
            "storage": spec,
            "study_name": study_name,
            "waypoint_dir": str(directory / kind / "representatives"),
            "member_dir": str(directory / kind / "members"),
        }
        Path(studies[kind]["member_dir"]).mkdir(parents=True)

    started = time.perf_counter()
    results = collect(
        [
            start_worker(
                "optimize",
                {
                    "worker": worker,
                    "studies": list(studies.values()),
                    "n_trials": TRIALS_PER_WORKER,
                },
                hash_seed=worker,
            )
            for worker in range(N_WORKERS)
        ]
    )
    return SharedRun(studies, results, time.perf_counter() - started, skipped)


@pytest.mark.parametrize("kind", STORAGE_KINDS)
def test_workers_share_study(kind: str, shared_run: SharedRun) -> None:
    if kind in shared_run.skipped:
        pytest.skip(shared_run.skipped[kind])
    entry = shared_run.studies[kind]
    storage = _workers.open_storage(entry["storage"])
    trials = optuna.load_study(study_name=entry["study_name"], storage=storage).trials
    n_trials = N_WORKERS * TRIALS_PER_WORKER

    assert len(trials) == n_trials
    assert [t.number for t in trials] == list(range(n_trials))
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    # Every trial ran in exactly one worker, and each worker ran its share.
    ran = sorted(number for result in shared_run.results for number in result["trials"][kind])
    assert ran == list(range(n_trials))
    for result in shared_run.results:
        assert len(result["trials"][kind]) == TRIALS_PER_WORKER, result
    worker_of = {n: r["worker"] for r in shared_run.results for n in r["trials"][kind]}
    for trial in trials:
        assert trial.user_attrs[_workers.WORKER_ATTR] == worker_of[trial.number]
        json.dumps(trial.user_attrs, allow_nan=False)
        json.dumps(trial.system_attrs, allow_nan=False)

    memberships = check_classes(trials, Path(entry["waypoint_dir"]), Path(entry["member_dir"]))
    # At least one worker placed a trial against waypoints that another worker stored.
    assert memberships["other_worker_members"] >= 1, memberships
    states = Counter(t.state.name for t in trials)
    logging.getLogger(__name__).info(
        "%s: %d trials by %d workers (all storages: %.1f s); states %s; classes %s",
        kind,
        n_trials,
        N_WORKERS,
        shared_run.seconds,
        dict(states),
        memberships,
    )


def check_classes(
    trials: list[optuna.trial.FrozenTrial], waypoint_dir: Path, member_dir: Path
) -> dict[str, int]:
    """Check every stored class id against its founder, recomputing members' barriers.

    Returns counts of class founders, of members placed in a class founded by the same
    worker, and of members placed in a class founded by another worker.
    """
    by_number = {t.number: t for t in trials}
    for trial in trials:
        # Every class id, also one given to a running trial on its prefix, names a class
        # whose founder is a representative in this storage.
        class_id = trial.user_attrs.get(CLASS_ID)
        if class_id is not None:
            founder = by_number[int(class_id.removeprefix("c"))]
            assert founder.user_attrs.get(REPRESENTATIVE) is True, (trial.number, class_id)
    fitted = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs[FITTED]]
    assert fitted, "no trial was fitted, so no class was tested"
    epsilon = _workers.TRACKER_CONFIG.epsilon
    x, y = _workers.synthetic_data()
    probe = topselect.make_probe_set(x, y, size=64, seed=_workers.SEED)
    model = _workers.build_model()
    store = LocalWaypointStore(waypoint_dir)
    counts = {"founders": 0, "same_worker_members": 0, "other_worker_members": 0}
    for trial in fitted:
        class_id = trial.user_attrs[CLASS_ID]
        assert trial.user_attrs[CLASS_FINAL] is True
        assert isinstance(class_id, str) and class_id.startswith("c"), trial.number
        founder = by_number[int(class_id[1:])]
        assert founder.user_attrs.get(REPRESENTATIVE) is True, (trial.number, class_id)
        assert founder.user_attrs[CLASS_ID] == class_id
        if founder.number == trial.number:
            counts["founders"] += 1
            continue
        recorded = trial.user_attrs[CLASS_BARRIERS][class_id]
        assert recorded <= epsilon, (trial.number, class_id, recorded)
        # Recompute in this process the barriers that a worker measured against waypoints
        # that possibly another worker stored.
        member = _workers.load_waypoints(member_dir / f"{trial.number}.npz")
        founder_waypoints = store.load(founder.user_attrs[WAYPOINTS_REF])
        fractions = [float(f) for f in trial.user_attrs.get(CLASS_FRACTIONS) or member]
        recomputed = max(
            topselect.loss_barrier(
                model, F.cross_entropy, probe, member[f], founder_waypoints[f]
            ).barrier
            for f in fractions
        )
        assert recomputed <= epsilon, (trial.number, class_id, recomputed)
        assert recomputed == pytest.approx(recorded, abs=1e-5), (trial.number, class_id)
        same = trial.user_attrs[_workers.WORKER_ATTR] == founder.user_attrs[_workers.WORKER_ATTR]
        counts["same_worker_members" if same else "other_worker_members"] += 1
    return counts


# -- the same snapshot, two fresh processes ----------------------------------------------

SPACE = {
    "x": FloatDistribution(-3.0, 3.0),
    "n": IntDistribution(1, 8),
    "kind": CategoricalDistribution(["a", "b", "c"]),
}


def add_finished(
    study: optuna.Study,
    state: TrialState,
    params: dict[str, Any],
    value: float,
    attrs: dict[str, Any],
) -> None:
    intermediate = {step: value + 0.5 / (step + 1) for step in range(4)}
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params=params,
            distributions=SPACE,
            user_attrs=attrs,
            intermediate_values=intermediate,
        )
    )


def build_snapshot(url: str, study_name: str) -> dict[int, str]:
    """Write a study with finished trials and two RUNNING ones; return the running ones.

    Class ``c1`` contains two completed trials that ended far worse than the median, so the
    running trial placed in ``c1`` meets the class rule. The other running trial has no
    class, so only the base pruner may prune it.
    """
    study = optuna.create_study(study_name=study_name, storage=url, direction="minimize")
    kinds = ["a", "b", "c"]
    for i in range(8):
        params = {"x": -2.5 + 0.6 * i, "n": 1 + i % 8, "kind": kinds[i % 3]}
        poor = i in (1, 4)
        value = 5.0 + i if poor else 0.2 * i
        attrs = {
            SCORES: {DEFAULT_SCORE: (i % 5) / 4.0},
            FITTED: i % 3 != 2,
            CLASS_ID: "c1" if poor else f"c{i}",
        }
        add_finished(study, TrialState.COMPLETE, params, value, attrs)
    add_finished(study, TrialState.PRUNED, {"x": 2.9, "n": 8, "kind": "c"}, 9.0, {FITTED: False})
    running = {}
    for class_id, value in (("c1", 1.0), (None, 1.0)):
        trial = study.ask(SPACE)
        if class_id is not None:
            trial.set_user_attr(CLASS_ID, class_id)
        for step in range(3):
            trial.report(value, step)
        running[trial.number] = class_id
    return running


def test_decisions_same_in_fresh_processes(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.db"
    running = build_snapshot(f"sqlite:///{snapshot}", "snapshot")
    copies = []
    for name in ("a", "b", "in-process"):
        copy = tmp_path / f"{name}.db"
        shutil.copyfile(snapshot, copy)
        copies.append({"kind": "sqlite", "url": f"sqlite:///{copy}"})

    first, second = collect(
        [
            start_worker("decide", {"study_name": "snapshot", "storage": spec}, hash_seed=seed)
            for spec, seed in zip(copies[:2], (1, 2), strict=True)
        ]
    )
    in_process = _workers.decide({"study_name": "snapshot", "storage": copies[2]})

    assert first == second
    assert json.loads(json.dumps(in_process)) == first
    # The decisions are the expected ones, so the comparison above is not between two
    # empty results.
    poor, unplaced = (str(n) for n in running)
    assert running[int(poor)] == "c1"
    pruned, reason = first["prune"][poor]
    assert pruned is True
    assert reason.startswith("class c1: all 2 completed members ended worse than the median")
    assert first["prune"][unplaced] == [False, None]
    assert set(first["params"]) == {"x", "n", "kind"}


# -- attributes on RDB storages ----------------------------------------------------------


@pytest.mark.usefixtures("single_torch_thread")
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_tracker_attrs_json_on_rdb(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, unique_study_name: str
) -> None:
    if kind == "sqlite":
        spec = {"kind": kind, "url": f"sqlite:///{tmp_path / 'optuna.db'}"}
    else:
        spec = {"kind": kind, "url": request.getfixturevalue("postgres_url")}
    storage = _workers.open_storage(spec)
    study = optuna.create_study(
        study_name=unique_study_name,
        storage=storage,
        direction="minimize",
        sampler=_workers.make_sampler(0),
        # Plain SGD at lr 0.05 still has a loss of 0.65 at step 3 (measured), so the
        # threshold prunes it there.
        pruner=topselect.TopologicalPruner(
            optuna.pruners.ThresholdPruner(upper=0.62, n_warmup_steps=3)
        ),
    )
    # Enqueued params: a fitted trial that founds a class, a close one that joins it,
    # and one too slow to fit, which the threshold prunes.
    study.enqueue_trial({"lr": 1.0, "momentum": 0.9})
    study.enqueue_trial({"lr": 0.9, "momentum": 0.9})
    study.enqueue_trial({"lr": 0.05, "momentum": 0.0})
    member_dir = tmp_path / "members"
    member_dir.mkdir()
    objective = _workers.make_objective(tmp_path / "representatives", member_dir, worker=0)

    study.optimize(objective, n_trials=6)

    reloaded = optuna.load_study(study_name=unique_study_name, storage=storage)
    assert reloaded.trials[2].state == TrialState.PRUNED
    assert reloaded.trials[2].user_attrs[PRUNE_REASON] == "ThresholdPruner at step 3"
    keys: set[str] = set()
    for trial in reloaded.trials:
        attrs = trial.user_attrs
        # allow_nan=False: NaN and inf are not JSON, and other readers reject them.
        text = json.dumps(attrs, allow_nan=False)
        assert json.loads(text) == attrs
        keys.update(attrs)
    for key in (SCORES, FITTED, CLASS_ID, CLASS_BARRIERS, REPRESENTATIVE, WAYPOINTS_REF):
        assert key in keys, f"no trial has {key}, so its encoding was not tested"
