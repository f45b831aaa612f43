"""Homotopy classes of real digits-MLP trajectories: membership, prefixes, merges, shapes."""

from __future__ import annotations

import itertools
import math

import pytest
from _trajectories import (
    EPSILON,
    FIT_LOSS,
    Trajectory,
    make_tester,
    permuted_copy,
    train,
)

import topselect
from topselect.homotopy import (
    ClassDecision,
    ClassRegistry,
    HomotopyTester,
    Representative,
    assign_class,
    resolve_classes,
)
from topselect.homotopy._classes import _by_sketch_distance


def _registry(*testers: HomotopyTester, **options) -> ClassRegistry:
    return ClassRegistry({t.architecture: t for t in testers}, **options)


def _place(registry: ClassRegistry, number: int, run: Trajectory, **options) -> ClassDecision:
    options.setdefault("fitted", run.loss <= FIT_LOSS)
    return registry.place(
        number, run.waypoints, run.sketches, architecture=run.architecture, **options
    )


def _representative(class_id: str, number: int, run: Trajectory) -> Representative:
    return Representative(class_id, number, run.sketches, class_id, run.architecture)


def _loader(runs: dict[str, Trajectory]):
    return lambda reference: runs[reference].waypoints


# -- membership ------------------------------------------------------------------------


def test_data_order_runs_share_class(small_lr_runs) -> None:
    registry = _registry(make_tester())

    decisions = [_place(registry, i, run) for i, run in enumerate(small_lr_runs)]

    assert all(run.loss <= FIT_LOSS for run in small_lr_runs)
    assert decisions[0].class_id is None  # The first run founds the class.
    assert decisions[1].class_id == "c0"
    assert decisions[2].class_id == "c0"
    assert registry.labels() == {0: "c0", 1: "c0", 2: "c0"}
    assert len(registry.representatives) == 1
    for decision in decisions[1:]:
        assert decision.barriers["c0"] <= EPSILON
        assert decision.pair_tests == 1
        # Nine fractions: the last alone, then the other eight in one batch.
        assert decision.barrier_evaluations == 9


def test_permuted_perturbed_copy_separate_class(small_lr_runs) -> None:
    original = small_lr_runs[0]
    copy = permuted_copy(original, seed=7, noise=1e-3)
    tester = make_tester()

    exact = tester.witness(original.waypoints, copy.waypoints, stop_early=False)
    registry = _registry(tester)
    _place(registry, 0, original)
    decision = _place(registry, 1, copy)

    # The copy computes nearly the same function at every waypoint, so its fit does not
    # explain the separation. The permutation puts a barrier on the straight line.
    assert exact.barriers[0.0] <= EPSILON  # The two random initializations are not apart.
    assert exact.barriers[1.0] > 4 * EPSILON
    assert not exact.witnessed
    assert decision.class_id is None
    assert registry.labels() == {0: "c0", 1: "c1"}
    # Early stopping: the last fraction alone already exceeds epsilon.
    assert decision.barrier_evaluations == 1


def test_different_architectures_never_share(small_lr_runs) -> None:
    narrow = small_lr_runs[0]
    wide = train(1, 0.05, width=64)
    registry = _registry(make_tester(), make_tester(width=64))

    _place(registry, 0, narrow)
    decision = _place(registry, 1, wide)

    assert narrow.architecture != wide.architecture
    assert decision.class_id is None
    assert decision.pair_tests == 0
    assert registry.labels() == {0: "c0", 1: "c1"}


def test_other_architecture_representative_never_loaded(small_lr_runs) -> None:
    run = small_lr_runs[1]
    stranger = Representative("c9", 9, run.sketches, "never-loaded", "another-shape")

    def load(reference: str):
        raise AssertionError(f"loaded {reference}, a representative of another architecture")

    decision = assign_class(run.waypoints, run.sketches, [stranger], load, make_tester())

    assert decision.class_id is None
    assert decision.pair_tests == 0


def test_unknown_architecture_rejected(small_lr_runs) -> None:
    registry = _registry(make_tester())
    run = small_lr_runs[0]

    with pytest.raises(topselect.InvalidInputError, match="no HomotopyTester for architecture"):
        registry.place(0, run.waypoints, run.sketches, architecture="abc", fitted=True)


def test_unfitted_run_gets_no_class(small_lr_runs) -> None:
    registry = _registry(make_tester())
    _place(registry, 0, small_lr_runs[0])

    decision = _place(registry, 1, small_lr_runs[1], fitted=False)

    assert decision.class_id is None
    assert decision.pair_tests == 0
    assert registry.labels() == {0: "c0", 1: None}
    assert len(registry.representatives) == 1


def test_nearest_sketch_tested_first(small_lr_runs, large_lr_runs) -> None:
    run = small_lr_runs[1]
    reps = [
        _representative("c0", 0, large_lr_runs[0]),
        _representative("c1", 1, small_lr_runs[0]),
    ]
    stored = {"c0": large_lr_runs[0], "c1": small_lr_runs[0]}

    decision = assign_class(
        run.waypoints, run.sketches, reps, _loader(stored), make_tester(), max_candidates=1
    )

    assert decision.class_id == "c1"
    assert list(decision.barriers) == ["c1"]
    assert decision.pair_tests == 1


@pytest.mark.parametrize(
    ("max_candidates", "sketches", "pattern"),
    [
        (0, {0.0: [0.0]}, "max_candidates must be >= 1, but got 0"),
        (1, {}, "sketches must hold at least one fraction"),
    ],
)
def test_assign_class_invalid_arguments(max_candidates, sketches, pattern) -> None:
    with pytest.raises(topselect.InvalidInputError, match=pattern):
        assign_class(
            {}, sketches, [], dict.__getitem__, make_tester(), max_candidates=max_candidates
        )


# -- prefixes of running and pruned trials ----------------------------------------------


def test_prefix_placed_without_founding(small_lr_runs) -> None:
    registry = _registry(make_tester())
    _place(registry, 0, small_lr_runs[0])
    prefix = small_lr_runs[1].prefix(0.5)

    decision = _place(registry, 1, prefix, final=False, fitted=False)

    assert decision.class_id == "c0"
    assert decision.fractions == (0.0, 0.125, 0.25, 0.375, 0.5)
    assert decision.barrier_evaluations == 5


def test_prefix_previous_class_tests_new_fractions(small_lr_runs) -> None:
    registry = _registry(make_tester())
    _place(registry, 0, small_lr_runs[0])
    run = small_lr_runs[1]
    first = _place(registry, 1, run.prefix(0.5), final=False, fitted=False)

    second = _place(registry, 1, run.prefix(0.75), final=False, fitted=False, previous=first)

    assert second.class_id == "c0"
    assert second.pair_tests == 1
    assert second.barrier_evaluations == 2  # Only 0.625 and 0.75 are new.
    assert second.fractions == (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75)


def test_prefix_unmatched_never_founds(small_lr_runs) -> None:
    registry = _registry(make_tester())
    _place(registry, 0, small_lr_runs[0])
    stranger = permuted_copy(small_lr_runs[0], seed=3, noise=1e-3).prefix(0.75)

    decision = _place(registry, 1, stranger, final=False, fitted=False)

    assert decision.class_id is None
    assert len(registry.representatives) == 1
    assert registry.labels() == {0: "c0", 1: None}


def test_prefix_failed_representative_skipped_later(small_lr_runs) -> None:
    stranger = permuted_copy(small_lr_runs[0], seed=7, noise=1e-3)
    reps = [_representative("c0", 0, stranger)]
    loader = _loader({"c0": stranger})
    run = small_lr_runs[1]
    tester = make_tester()
    first = assign_class(
        run.prefix(0.75).waypoints, run.prefix(0.75).sketches, reps, loader, tester, final=False
    )

    second = assign_class(
        run.waypoints, run.sketches, reps, loader, tester, final=True, previous=first
    )

    assert first.class_id is None
    assert first.barriers["c0"] > EPSILON
    # A fraction over epsilon stays shared, so the representative is not tested again.
    assert second.pair_tests == 0
    assert second.barriers == first.barriers
    assert second.class_id is None


def test_pruned_partial_trajectory_keeps_prefix_class(small_lr_runs) -> None:
    registry = _registry(make_tester())
    _place(registry, 0, small_lr_runs[0])
    # A trial pruned at 3/8 of training: its prefix is all there ever is.
    partial = small_lr_runs[2].prefix(0.375)

    decision = _place(registry, 1, partial, final=False, fitted=False)

    assert sorted(partial.waypoints) == [0.0, 0.125, 0.25, 0.375]
    assert decision.class_id == "c0"
    assert registry.labels()[1] == "c0"
    assert [r.trial_number for r in registry.representatives] == [0]


# -- merges ------------------------------------------------------------------------------


def test_linking_run_merges_two_classes(small_lr_runs) -> None:
    # Two representatives of what is one class, as two workers that founded classes at
    # the same moment leave them.
    first, second, linking = small_lr_runs
    reps = [_representative("c0", 0, first), _representative("c1", 1, second)]
    stored = {"c0": first, "c1": second}

    decision = assign_class(
        linking.waypoints,
        linking.sketches,
        reps,
        _loader(stored),
        make_tester(),
        confirm_merges=True,
    )

    assert set(decision.witnessed) == {"c0", "c1"}
    assert decision.class_id in ("c0", "c1")
    assert len(decision.merges) == 1
    assert set(decision.merges[0]) == {"c0", "c1"}
    # Two membership tests and one direct test between the representatives.
    assert decision.pair_tests == 3
    assert resolve_classes({"c0": 0, "c1": 1}, decision.merges) == {"c0": "c0", "c1": "c0"}


def test_merge_check_cached_per_tester(small_lr_runs) -> None:
    first, second, linking = small_lr_runs
    reps = [_representative("c0", 0, first), _representative("c1", 1, second)]
    tester = make_tester()
    loader = _loader({"c0": first, "c1": second})

    once = assign_class(
        linking.waypoints, linking.sketches, reps, loader, tester, confirm_merges=True
    )
    again = assign_class(
        linking.waypoints, linking.sketches, reps, loader, tester, confirm_merges=True
    )

    assert once.pair_tests == 3
    assert again.pair_tests == 2  # The representatives' test is not repeated.
    assert again.merges == once.merges


def _midpoint(a: Trajectory, b: Trajectory) -> Trajectory:
    waypoints = {f: (a.waypoints[f] + b.waypoints[f]) / 2 for f in a.waypoints}
    sketches = {f: (a.sketches[f] + b.sketches[f]) / 2 for f in a.sketches}
    return Trajectory(waypoints, sketches, math.nan, a.architecture)


@pytest.mark.parametrize("confirm", [True, False])
def test_merge_confirmation_blocks_chaining(large_lr_runs, confirm) -> None:
    first, second = large_lr_runs
    between = _midpoint(first, second)
    probe_tester = make_tester()
    to_first = probe_tester.witness(between.waypoints, first.waypoints, stop_early=False)
    to_second = probe_tester.witness(between.waypoints, second.waypoints, stop_early=False)
    apart = probe_tester.witness(first.waypoints, second.waypoints, stop_early=False)
    link = max(to_first.max_barrier, to_second.max_barrier)
    # The midpoint path is closer to each end than the ends are to each other. Epsilon is
    # set between the two, so the midpoint links two founders that are apart.
    assert link < apart.max_barrier, (link, apart.max_barrier)
    epsilon = (link + apart.max_barrier) / 2
    reps = [_representative("c0", 0, first), _representative("c1", 1, second)]
    stored = {"c0": first, "c1": second}

    decision = assign_class(
        between.waypoints,
        between.sketches,
        reps,
        _loader(stored),
        make_tester(epsilon=epsilon),
        confirm_merges=confirm,
    )

    assert set(decision.witnessed) == {"c0", "c1"}
    assert decision.merges == (() if confirm else ((decision.class_id, _other(decision)),))


def test_linking_run_merges_without_confirmation_by_default(small_lr_runs) -> None:
    first, second, linking = small_lr_runs
    reps = [_representative("c0", 0, first), _representative("c1", 1, second)]

    decision = assign_class(
        linking.waypoints,
        linking.sketches,
        reps,
        _loader({"c0": first, "c1": second}),
        make_tester(),
    )

    assert set(decision.witnessed) == {"c0", "c1"}
    assert len(decision.merges) == 1
    assert set(decision.merges[0]) == {"c0", "c1"}
    assert decision.pair_tests == 2  # No test between the representatives.


def test_merged_class_tested_once(small_lr_runs) -> None:
    first, second, linking = small_lr_runs
    reps = [_representative("c0", 0, first), _representative("c1", 1, second)]
    loader = _loader({"c0": first, "c1": second})

    decision = assign_class(
        linking.waypoints,
        linking.sketches,
        reps,
        loader,
        make_tester(),
        components={"c0": "c0", "c1": "c0"},
    )

    assert decision.pair_tests == 1
    assert len(decision.witnessed) == 1
    assert decision.merges == ()
    assert list(decision.barriers) == [decision.class_id]


def test_skipped_member_not_counted_as_candidate(small_lr_runs) -> None:
    first, second, linking = small_lr_runs
    stranger = permuted_copy(first, seed=5, noise=1e-3)
    reps = [
        _representative("c0", 0, first),
        _representative("c1", 1, second),
        _representative("c2", 2, stranger),
    ]
    loader = _loader({"c0": first, "c1": second, "c2": stranger})
    components = {"c0": "c0", "c1": "c0", "c2": "c2"}

    decision = assign_class(
        linking.waypoints,
        linking.sketches,
        reps,
        loader,
        make_tester(),
        max_candidates=2,
        components=components,
    )

    # The stranger is the farthest sketch. It is reached because the second member of
    # the class already joined is skipped without using up a candidate.
    assert _by_sketch_distance(reps, linking.sketches)[-1].class_id == "c2"
    assert decision.pair_tests == 2
    assert set(decision.barriers) == {decision.class_id, "c2"}
    assert decision.barriers["c2"] > EPSILON
    assert decision.class_id in ("c0", "c1")


@pytest.mark.parametrize(("prefix_candidates", "tests"), [(1, 1), (3, 2)])
def test_registry_prefix_candidates_limit_prefix_search(
    small_lr_runs, prefix_candidates, tests
) -> None:
    registry = _registry(make_tester(), prefix_candidates=prefix_candidates)
    for number, seed in enumerate((3, 9)):
        stranger = permuted_copy(small_lr_runs[0], seed=seed, noise=1e-3)
        _place(registry, number, stranger, fitted=True)
    prefix = small_lr_runs[1].prefix(0.75)

    decision = _place(registry, 2, prefix, final=False, fitted=False)

    assert [r.trial_number for r in registry.representatives] == [0, 1]
    assert decision.class_id is None
    assert decision.pair_tests == tests


def _other(decision: ClassDecision) -> str:
    return next(c for c in decision.witnessed if c != decision.class_id)


def test_registry_all_pairs_links_everything_witnessed(small_lr_runs) -> None:
    registry = _registry(make_tester(), mode="all_pairs")

    for number, run in enumerate(small_lr_runs):
        _place(registry, number, run)

    assert registry.labels() == {0: "c0", 1: "c0", 2: "c0"}
    assert [r.trial_number for r in registry.representatives] == [0, 1, 2]
    # Run 2 is witnessed against one member of the class that c0 and c1 already form,
    # and the other member is skipped untested: merges 1-0 and 2-(0 or 1).
    assert len(registry.merges) == 2
    assert registry.merges[0] == ("c1", "c0")
    assert registry.merges[1][0] == "c2"
    assert registry.merges[1][1] in ("c0", "c1")
    assert registry.testers[small_lr_runs[0].architecture].pair_tests == 2


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"mode": "pairs"}, "mode must be 'representatives' or 'all_pairs'"),
        ({"max_candidates": 0}, "max_candidates must be >= 1, but got 0"),
        ({"prefix_candidates": 0}, "prefix_candidates must be >= 1, but got 0"),
    ],
)
def test_registry_invalid_options(options, pattern) -> None:
    with pytest.raises(topselect.InvalidInputError, match=pattern):
        ClassRegistry({}, **options)


# -- resolving merged class ids ------------------------------------------------------------

MERGES = [("c5", "c2"), ("c7", "c5"), ("c9", "c8")]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_resolve_classes_order_independent(order) -> None:
    founders = {"c2": 2, "c5": 5, "c7": 7, "c8": 8, "c9": 9, "c11": 11}

    resolved = resolve_classes(founders, [MERGES[i] for i in order])

    assert resolved == {
        "c2": "c2",
        "c5": "c2",
        "c7": "c2",
        "c8": "c8",
        "c9": "c8",
        "c11": "c11",
    }


def test_resolve_classes_unknown_founder_sorts_last() -> None:
    resolved = resolve_classes({"c4": 4}, [("c1", "c4"), ("c1", "x")])

    assert resolved == {"c4": "c4", "c1": "c4", "x": "c4"}


def test_witness_no_shared_fraction_not_witnessed(small_lr_runs) -> None:
    tester = make_tester()
    early = {0.125: small_lr_runs[0].waypoints[0.125]}
    late = {0.5: small_lr_runs[1].waypoints[0.5]}

    result = tester.witness(early, late)

    assert not result.witnessed
    assert result.max_barrier == math.inf
    assert result.fractions == ()


@pytest.mark.parametrize("epsilon", [-0.1, math.inf, math.nan])
def test_tester_invalid_epsilon(epsilon) -> None:
    with pytest.raises(topselect.InvalidInputError, match="epsilon must be a finite number >= 0"):
        make_tester(epsilon=epsilon)
