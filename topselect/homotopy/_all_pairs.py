"""Exact homotopy classes from pairs of trajectories: the full matrix or union-find."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from topselect.exceptions import InvalidInputError
from topselect.homotopy._classes import HomotopyTester, Waypoints

__all__ = [
    "LinkedClasses",
    "PairwiseBarriers",
    "all_pairs_classes",
    "pairwise_barriers",
    "single_linkage_classes",
]


@dataclass(frozen=True)
class PairwiseBarriers:
    """Pair tests between every two trajectories of a list.

    Attributes:
        max_barriers: ``(N, N)`` symmetric matrix of the largest barrier over shared
            fractions, in loss units, with 0 on the diagonal. Where a test stopped early
            the entry is a lower bound that already exceeds ``epsilon``. NaN where a
            loss was NaN, ``inf`` where two trajectories share no fraction.
        epsilon: The tester's epsilon.
        exact: Whether every shared fraction of every pair was evaluated, so that
            ``max_barriers`` is exact and valid at any epsilon.
        pair_tests: Pairs tested, ``N (N - 1) / 2``.
        barrier_evaluations: Segments evaluated.
    """

    max_barriers: NDArray[np.float64]
    epsilon: float
    exact: bool
    pair_tests: int
    barrier_evaluations: int


def pairwise_barriers(
    trajectories: Sequence[Waypoints], tester: HomotopyTester, *, exact: bool = False
) -> PairwiseBarriers:
    """Test every pair of trajectories of one architecture.

    Args:
        trajectories: Waypoints of each trajectory by progress fraction.
        tester: Pair tester of their architecture.
        exact: Evaluate every shared fraction of every pair (about ``T`` times the cost
            for pairs that are not homotopic), so the matrix serves every epsilon.
    """
    n = len(trajectories)
    matrix = np.zeros((n, n))
    pairs_before = tester.pair_tests
    evaluations_before = tester.barrier_evaluations
    for i in range(n):
        for j in range(i + 1, n):
            result = tester.witness(trajectories[i], trajectories[j], stop_early=not exact)
            matrix[i, j] = matrix[j, i] = result.max_barrier
    return PairwiseBarriers(
        max_barriers=matrix,
        epsilon=tester.epsilon,
        exact=exact,
        pair_tests=tester.pair_tests - pairs_before,
        barrier_evaluations=tester.barrier_evaluations - evaluations_before,
    )


def all_pairs_classes(
    barriers: PairwiseBarriers,
    epsilon: float | None = None,
    *,
    linkage: Literal["single", "complete"] = "single",
    eligible: Sequence[bool] | None = None,
) -> NDArray[np.int64]:
    """Group trajectories into classes from their pairwise barriers.

    ``"single"``: the connected components of the witnessed pairs (barrier at most
    epsilon), the exact equivalence closure of epsilon-homotopy, which chains. This is
    what the tracker's all-pairs mode computes. ``"complete"``: complete-linkage
    clustering cut at epsilon, so every two members of a class are witnessed directly.

    Args:
        barriers: Result of :func:`pairwise_barriers`.
        epsilon: Largest barrier counted as homotopic; the tester's when ``None``. Another
            value needs an exact matrix.
        linkage: ``"single"`` or ``"complete"``.
        eligible: Which trajectories get a class (e.g. fitted runs); others get -1.

    Returns:
        ``(N,)`` labels; each class is labelled by the index of its first member.

    Raises:
        InvalidInputError: For an unknown linkage, an ``eligible`` of the wrong length,
            or an epsilon other than the tester's on a matrix that is not exact.
    """
    epsilon = barriers.epsilon if epsilon is None else float(epsilon)
    if not barriers.exact and epsilon != barriers.epsilon:
        raise InvalidInputError(
            f"epsilon {epsilon} differs from the {barriers.epsilon} the barriers were tested "
            f"at, and the matrix is not exact: recompute it with exact=True."
        )
    if linkage not in ("single", "complete"):
        raise InvalidInputError(f"linkage must be 'single' or 'complete', but got {linkage!r}.")
    n = len(barriers.max_barriers)
    keep = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    if keep.shape != (n,):
        raise InvalidInputError(f"eligible must have {n} entries, but got {keep.shape}.")
    labels = np.full(n, -1, dtype=np.int64)
    index = np.flatnonzero(keep)
    if len(index) == 0:
        return labels
    sub = barriers.max_barriers[np.ix_(index, index)]
    sub = np.where(np.isnan(sub), math.inf, sub)
    groups = _single(sub, epsilon) if linkage == "single" else _complete(sub, epsilon)
    first: dict[int, int] = {}
    for position, group in enumerate(groups):
        first.setdefault(int(group), int(index[position]))
        labels[index[position]] = first[int(group)]
    return labels


def _single(matrix: NDArray[np.float64], epsilon: float) -> NDArray[np.int64]:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    adjacency = csr_matrix(matrix <= epsilon)
    _, groups = connected_components(adjacency, directed=False)
    return np.asarray(groups, dtype=np.int64)


def _complete(matrix: NDArray[np.float64], epsilon: float) -> NDArray[np.int64]:
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = len(matrix)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    # linkage needs finite, non-negative distances: shift by the smallest entry and cap
    # the infinite ones, which only ever separate.
    finite = matrix[np.isfinite(matrix)]
    low = min(float(finite.min()), 0.0) if finite.size else 0.0
    cap = max(float(finite.max()) if finite.size else 0.0, epsilon) - low + 1.0
    shifted = np.where(np.isfinite(matrix), matrix - low, cap)
    np.fill_diagonal(shifted, 0.0)
    tree = linkage(squareform(shifted, checks=False), method="complete")
    groups = fcluster(tree, t=epsilon - low, criterion="distance")
    return np.asarray(groups, dtype=np.int64)


@dataclass(frozen=True)
class LinkedClasses:
    """Single-linkage classes found by union-find, with the pair tests they took.

    Attributes:
        labels: ``(N,)`` class of each trajectory, labelled by the index of its first
            member; -1 for trajectories that were not eligible.
        epsilon: The tester's epsilon.
        pair_tests: Pairs tested; at most ``M (M - 1) / 2`` for ``M`` eligible ones.
        barrier_evaluations: Segments evaluated.
    """

    labels: NDArray[np.int64]
    epsilon: float
    pair_tests: int
    barrier_evaluations: int


def single_linkage_classes(
    trajectories: Sequence[Waypoints],
    tester: HomotopyTester,
    *,
    eligible: Sequence[bool] | None = None,
) -> LinkedClasses:
    """Group trajectories into the connected components of their witnessed pairs.

    The result equals ``all_pairs_classes(pairwise_barriers(...), linkage="single")``
    without testing every pair. Trajectories are added in order, and each is tested
    against the members of every earlier component until one member is witnessed (the
    components it links then merge) or none is. A pair inside a component that the new
    trajectory already joined is never tested, because its result cannot change the
    components. Pair tests stop early at the first fraction over epsilon.

    Args:
        trajectories: Waypoints of each trajectory by progress fraction.
        tester: Pair tester of their architecture.
        eligible: Which trajectories get a class (e.g. fitted runs); others get -1 and
            are never tested.

    Raises:
        InvalidInputError: When ``eligible`` has another length than ``trajectories``.
    """
    n = len(trajectories)
    keep = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    if keep.shape != (n,):
        raise InvalidInputError(f"eligible must have {n} entries, but got {keep.shape}.")
    pairs_before = tester.pair_tests
    evaluations_before = tester.barrier_evaluations

    def witnessed(i: int, j: int) -> bool:
        return tester.witness(trajectories[i], trajectories[j]).witnessed

    labels = _linked_components(keep, witnessed)
    return LinkedClasses(
        labels=labels,
        epsilon=tester.epsilon,
        pair_tests=tester.pair_tests - pairs_before,
        barrier_evaluations=tester.barrier_evaluations - evaluations_before,
    )


def _linked_components(
    eligible: NDArray[np.bool_], witnessed: Callable[[int, int], bool]
) -> NDArray[np.int64]:
    """Label the connected components of ``witnessed`` over the eligible indices.

    ``witnessed(i, j)`` is called with ``j < i`` only, and never for a ``j`` in a
    component that ``i`` has already joined.

    Returns:
        ``(N,)`` labels, each component labelled by its lowest index; -1 where not
        eligible.
    """
    components: list[list[int]] = []
    for i in np.flatnonzero(eligible).tolist():
        joined: list[int] = [i]
        next_components: list[list[int]] = []
        for members in components:
            if any(witnessed(i, j) for j in members):
                joined.extend(members)
            else:
                next_components.append(members)
        next_components.append(sorted(joined))
        components = next_components
    labels = np.full(len(eligible), -1, dtype=np.int64)
    for members in components:
        labels[members] = members[0]
    return labels
