"""Exact all-pairs classes: the pairwise barrier matrix and its single and complete linkage."""

from __future__ import annotations

import numpy as np
import pytest
from _trajectories import FIT_LOSS, make_tester, permuted_copy

import topselect
from topselect.homotopy import (
    ClassRegistry,
    PairwiseBarriers,
    all_pairs_classes,
    pairwise_barriers,
    single_linkage_classes,
)
from topselect.homotopy._all_pairs import _linked_components


def _barriers(matrix, epsilon: float = 0.05, exact: bool = True) -> PairwiseBarriers:
    return PairwiseBarriers(np.asarray(matrix, dtype=float), epsilon, exact, 0, 0)


# a ~ b and b ~ c are witnessed, a ~ c is not; d is apart from all of them.
CHAIN = [
    [0.0, 0.01, 0.09, 0.5],
    [0.01, 0.0, 0.02, 0.5],
    [0.09, 0.02, 0.0, 0.5],
    [0.5, 0.5, 0.5, 0.0],
]


@pytest.mark.parametrize(
    ("linkage", "epsilon", "expected"),
    [
        ("single", 0.05, [0, 0, 0, 3]),
        ("complete", 0.05, [0, 0, 2, 3]),
        ("complete", 0.1, [0, 0, 0, 3]),
        ("single", 0.005, [0, 1, 2, 3]),
        ("single", 1.0, [0, 0, 0, 0]),
    ],
)
def test_all_pairs_linkage(linkage, epsilon, expected) -> None:
    labels = all_pairs_classes(_barriers(CHAIN), epsilon, linkage=linkage)

    assert labels.tolist() == expected


def test_all_pairs_eligible_and_nan() -> None:
    matrix = [[0.0, np.nan, 0.01], [np.nan, 0.0, 0.01], [0.01, 0.01, 0.0]]

    labels = all_pairs_classes(_barriers(matrix), eligible=[True, True, False])

    assert labels.tolist() == [0, 1, -1]  # NaN is never witnessed.


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"epsilon": 0.1, "exact": False}, r"epsilon 0.1 differs from the 0.05"),
        ({"linkage": "average"}, "linkage must be 'single' or 'complete'"),
        ({"eligible": [True]}, r"eligible must have 4 entries, but got \(1,\)"),
    ],
)
def test_all_pairs_invalid_arguments(options, pattern) -> None:
    barriers = _barriers(CHAIN, exact=options.pop("exact", True))

    with pytest.raises(topselect.InvalidInputError, match=pattern):
        all_pairs_classes(barriers, **options)


def test_pairwise_barriers_exact_matches_early(small_lr_runs) -> None:
    runs = [*small_lr_runs, permuted_copy(small_lr_runs[0], seed=7, noise=1e-3)]
    trajectories = [r.waypoints for r in runs]

    early = pairwise_barriers(trajectories, make_tester())
    exact = pairwise_barriers(trajectories, make_tester(), exact=True)

    assert early.pair_tests == exact.pair_tests == 6
    assert early.barrier_evaluations < exact.barrier_evaluations == 6 * 9
    np.testing.assert_array_equal(exact.max_barriers, exact.max_barriers.T)
    np.testing.assert_array_equal(np.diag(exact.max_barriers), np.zeros(4))
    # Witnessed pairs were fully evaluated either way, so their entries agree bit for bit.
    witnessed = exact.max_barriers <= exact.epsilon
    np.testing.assert_array_equal(early.max_barriers[witnessed], exact.max_barriers[witnessed])
    assert np.all(early.max_barriers[~witnessed] > early.epsilon)
    assert all_pairs_classes(early).tolist() == [0, 0, 0, 3]
    assert all_pairs_classes(exact).tolist() == [0, 0, 0, 3]


def test_registry_all_pairs_matches_matrix(small_lr_runs) -> None:
    runs = [*small_lr_runs, permuted_copy(small_lr_runs[1], seed=4, noise=1e-3)]
    tester = make_tester()
    registry = ClassRegistry({tester.architecture: tester}, mode="all_pairs")

    for number, run in enumerate(runs):
        registry.place(
            number,
            run.waypoints,
            run.sketches,
            architecture=run.architecture,
            fitted=run.loss <= FIT_LOSS,
        )
    matrix = pairwise_barriers([r.waypoints for r in runs], make_tester())

    expected = [f"c{label}" for label in all_pairs_classes(matrix).tolist()]
    assert list(registry.labels().values()) == expected
    # Runs 0-2 form one class: run 2 needs one test within it, run 3 one per class.
    assert tester.pair_tests < matrix.pair_tests


# -- union-find single linkage -------------------------------------------------------------


def _random_barriers(seed: int, n: int, share_witnessed: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.uniform(0.0, 1.0, size=(n, n)), k=1)
    matrix = upper + upper.T
    # Scale so that about `share_witnessed` of the pairs are at most 0.05.
    return matrix * (0.05 / share_witnessed)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("share_witnessed", [0.005, 0.02, 0.05, 0.2])
def test_linked_components_equal_full_matrix(seed, share_witnessed) -> None:
    n = 40
    matrix = _random_barriers(seed, n, share_witnessed)
    eligible = np.random.default_rng(seed + 100).uniform(size=n) < 0.8
    calls: list[tuple[int, int]] = []

    def witnessed(i: int, j: int) -> bool:
        calls.append((i, j))
        return bool(matrix[i, j] <= 0.05)

    labels = _linked_components(eligible, witnessed)

    expected = all_pairs_classes(_barriers(matrix), 0.05, eligible=eligible.tolist())
    assert labels.tolist() == expected.tolist()
    assert all(j < i for i, j in calls)
    assert all(eligible[i] and eligible[j] for i, j in calls)
    assert len(set(calls)) == len(calls)
    m = int(eligible.sum())
    assert len(calls) <= m * (m - 1) // 2


def test_linked_components_skip_pairs_inside_component() -> None:
    # Every pair is witnessed: run i joins the one component after one test.
    calls: list[tuple[int, int]] = []

    def witnessed(i: int, j: int) -> bool:
        calls.append((i, j))
        return True

    labels = _linked_components(np.ones(6, dtype=bool), witnessed)

    assert labels.tolist() == [0] * 6
    assert calls == [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]


def test_single_linkage_classes_equal_full_matrix(small_lr_runs) -> None:
    stranger = permuted_copy(small_lr_runs[0], seed=7, noise=1e-3)
    runs = [small_lr_runs[0], stranger, small_lr_runs[1], small_lr_runs[2]]
    trajectories = [r.waypoints for r in runs]

    linked = single_linkage_classes(trajectories, make_tester())
    matrix = pairwise_barriers(trajectories, make_tester())

    assert linked.labels.tolist() == all_pairs_classes(matrix).tolist() == [0, 1, 0, 0]
    assert matrix.pair_tests == 6
    # 1-0, then 2-0 (witnessed) and 2-1, then 3 against {0, 2} once and against 1.
    assert linked.pair_tests == 5
    assert linked.epsilon == matrix.epsilon


def test_single_linkage_classes_eligible(small_lr_runs) -> None:
    trajectories = [r.waypoints for r in small_lr_runs]

    linked = single_linkage_classes(trajectories, make_tester(), eligible=[True, False, True])

    assert linked.labels.tolist() == [0, -1, 0]
    assert linked.pair_tests == 1


def test_single_linkage_classes_invalid_eligible(small_lr_runs) -> None:
    trajectories = [r.waypoints for r in small_lr_runs]

    with pytest.raises(topselect.InvalidInputError, match=r"eligible must have 3 entries"):
        single_linkage_classes(trajectories, make_tester(), eligible=[True])
