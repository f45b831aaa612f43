"""Homotopy classes of training trajectories, built against one representative per class."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from topselect.exceptions import InvalidInputError
from topselect.homotopy._barrier import BarrierStrategy, SegmentEvaluator
from topselect.landscape import LossFn, ProbeSet

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_CONFIRM_MERGES",
    "DEFAULT_MAX_CANDIDATES",
    "DEFAULT_PREFIX_CANDIDATES",
    "ClassDecision",
    "HomotopyTester",
    "Representative",
    "WitnessResult",
    "architecture_signature",
    "assign_class",
    "witness_homotopy",
]

_logger = logging.getLogger(__name__)

# Defaults of the representative mode, chosen with benchmarks/homotopy_scaling.py on 200
# MLP runs each of digits and MNIST-1D at epsilon 0.05. They made 5.8% and 7.5% of the
# N(N-1)/2 pair tests there, with adjusted Rand index 1.00 and 0.94 against exact single
# linkage.
#: Representatives tested by a final search.
DEFAULT_MAX_CANDIDATES = 5
#: Representatives tested by a search on a running trajectory's prefix.
DEFAULT_PREFIX_CANDIDATES = 1
#: Whether a merge of two classes needs their representatives witnessed directly.
DEFAULT_CONFIRM_MERGES = False

#: Waypoints of one trajectory: flat parameter vectors by progress fraction.
Waypoints = Mapping[float, "torch.Tensor"]
#: Sketches of one trajectory: ``(k,)`` arrays by progress fraction.
Sketches = Mapping[float, NDArray[np.float64]]


def architecture_signature(model: torch.nn.Module) -> str:
    """Return 12 hex digits identifying the model's parameter names, shapes and dtypes.

    Trajectories of models with different signatures are never compared.
    """
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Representative:
    """The trial that founded a class, with what membership tests need from it.

    Attributes:
        class_id: Id of the class it founded (``c<trial number>`` in a study).
        trial_number: The founding trial; lower numbers win when classes merge.
        sketches: The founder's ``(k,)`` waypoint sketches by progress fraction.
        waypoints_ref: Where its full waypoints are stored (see ``WaypointStore``).
        architecture: Its :func:`architecture_signature`. Representatives of another
            architecture than the trajectory under test are skipped untested.
    """

    class_id: str
    trial_number: int
    sketches: Mapping[float, NDArray[np.float64]]
    waypoints_ref: str
    architecture: str = ""


@dataclass(frozen=True)
class WitnessResult:
    """Outcome of one pair test between two trajectories.

    Attributes:
        witnessed: Whether the barrier at every tested fraction was at most epsilon.
        max_barrier: Largest barrier among the fractions tested, in loss units; ``inf``
            when the trajectories share no fraction and NaN when a loss was NaN.
        barriers: Barrier at each fraction tested, by fraction.
        fractions: Every fraction the two trajectories share, ascending.
    """

    witnessed: bool
    max_barrier: float
    barriers: dict[float, float]
    fractions: tuple[float, ...]


class HomotopyTester:
    """Pair tests of epsilon-homotopy between trajectories of one architecture.

    Two trajectories are epsilon-homotopic when the loss barrier between their
    waypoints at every shared progress fraction is at most ``epsilon``: the straight-line
    homotopy between the two paths then stays within ``epsilon`` of their own losses. A
    negative result means "not witnessed", not "proved different". The tester counts
    its pair tests and barrier evaluations, so callers can report the cost.

    Args:
        model: A model of the architecture (only read).
        loss_fn: ``loss_fn(outputs, targets)`` giving the mean loss as a scalar tensor.
        probe: Probe set on which losses are measured.
        epsilon: Largest barrier (loss units) still counted as homotopic.
        n_points: Points per segment, endpoints included.
        strategy: Evaluation strategy of the segments (see ``loss_barrier``).

    Raises:
        InvalidInputError: When ``epsilon`` is not a finite number >= 0, or on the
            arguments that :class:`SegmentEvaluator` rejects.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        probe: ProbeSet,
        *,
        epsilon: float,
        n_points: int = 11,
        strategy: BarrierStrategy = "auto",
    ) -> None:
        if not (math.isfinite(epsilon) and epsilon >= 0):
            raise InvalidInputError(f"epsilon must be a finite number >= 0, but got {epsilon}.")
        self.epsilon = float(epsilon)
        self.segments = SegmentEvaluator(
            model, loss_fn, probe, n_points=n_points, strategy=strategy
        )
        self.architecture = architecture_signature(model)
        self.pair_tests = 0
        self.barrier_evaluations = 0
        self._stored_pairs: dict[tuple[str, str], WitnessResult] = {}

    def witness(
        self,
        waypoints_a: Waypoints,
        waypoints_b: Waypoints,
        *,
        fractions: Sequence[float] | None = None,
        stop_early: bool = True,
    ) -> WitnessResult:
        """Test whether two trajectories are epsilon-homotopic on their shared fractions.

        With ``stop_early`` the last shared fraction is tested first, because late
        waypoints separate runs most often, and the test ends there when its barrier
        exceeds epsilon. The other fractions are then evaluated in one batch. Without
        it every shared fraction is evaluated, so ``max_barrier`` is exact at any
        epsilon.

        Args:
            waypoints_a: Flat parameter vectors of the first trajectory by fraction.
            waypoints_b: The same for the second trajectory.
            fractions: Test only these of the shared fractions (all when ``None``).
            stop_early: Whether to stop at the first fraction over epsilon.
        """
        shared = tuple(sorted(set(waypoints_a) & set(waypoints_b)))
        selected = list(shared) if fractions is None else sorted(set(fractions) & set(shared))
        self.pair_tests += 1
        if not selected:
            return WitnessResult(False, math.inf, {}, shared)
        barriers: dict[float, float] = {}
        batches = [selected[-1:], selected[:-1]] if stop_early else [selected]
        for batch in batches:
            if not batch:
                continue
            results = self.segments.barriers([(waypoints_a[f], waypoints_b[f]) for f in batch])
            self.barrier_evaluations += len(batch)
            barriers.update({f: r.barrier for f, r in zip(batch, results, strict=True)})
            if stop_early and not self._all_within(barriers.values()):
                break
        values = list(barriers.values())
        worst = math.nan if any(math.isnan(v) for v in values) else max(values)
        witnessed = len(barriers) == len(selected) and self._all_within(values)
        return WitnessResult(witnessed, worst, barriers, shared)

    def witness_stored(
        self, reference_a: str, reference_b: str, load: Callable[[str], Waypoints]
    ) -> tuple[WitnessResult, bool]:
        """Test two stored trajectories (e.g. two representatives), once per tester.

        Stored waypoints never change, so the result depends only on the two references
        and is cached: a repeated merge check costs nothing.

        Returns:
            The result, and whether it was computed now rather than taken from the cache.
        """
        key = (min(reference_a, reference_b), max(reference_a, reference_b))
        cached = self._stored_pairs.get(key)
        if cached is not None:
            return cached, False
        result = self.witness(load(key[0]), load(key[1]))
        self._stored_pairs[key] = result
        return result, True

    def _all_within(self, barriers) -> bool:
        # NaN compares false, so a NaN barrier is never within epsilon.
        return all(b <= self.epsilon for b in barriers)


def witness_homotopy(
    model: torch.nn.Module,
    loss_fn: LossFn,
    probe: ProbeSet,
    waypoints_a: Waypoints,
    waypoints_b: Waypoints,
    epsilon: float,
    n_points: int = 11,
) -> tuple[bool, float, int]:
    """Test whether two trajectories are epsilon-homotopic on their shared fractions.

    A one-off form of :meth:`HomotopyTester.witness` with early stopping.

    Returns:
        ``(witnessed, max_barrier, barrier_evaluations)``; ``max_barrier`` is ``inf`` when
        no fraction is shared.
    """
    tester = HomotopyTester(model, loss_fn, probe, epsilon=epsilon, n_points=n_points)
    result = tester.witness(waypoints_a, waypoints_b)
    return result.witnessed, result.max_barrier, tester.barrier_evaluations


@dataclass(frozen=True)
class ClassDecision:
    """Outcome of a membership search.

    Attributes:
        class_id: The class joined, or ``None`` when no representative was witnessed.
        barriers: Largest barrier found against each representative tested, by class id,
            in loss units (a lower bound when the test stopped early).
        pair_tests: Trajectory pairs tested, rep-to-rep merge checks included.
        barrier_evaluations: Segments evaluated (one per fraction of a pair test).
        witnessed: Class ids whose representative was witnessed, in test order.
        merges: Pairs of class ids found to be one class: the trajectory was witnessed
            against both representatives, and the two representatives against each
            other when merges are confirmed.
        fractions: Fractions on which ``class_id`` was witnessed, ascending.
    """

    class_id: str | None
    barriers: dict[str, float] = field(default_factory=dict)
    pair_tests: int = 0
    barrier_evaluations: int = 0
    witnessed: tuple[str, ...] = ()
    merges: tuple[tuple[str, str], ...] = ()
    fractions: tuple[float, ...] = ()

    @property
    def tests(self) -> int:
        """Segments evaluated; the same as ``barrier_evaluations``."""
        return self.barrier_evaluations


def assign_class(
    waypoints: Waypoints,
    sketches: Sketches,
    representatives: Sequence[Representative],
    load_waypoints: Callable[[str], Waypoints],
    tester: HomotopyTester,
    *,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    final: bool = True,
    previous: ClassDecision | None = None,
    confirm_merges: bool = DEFAULT_CONFIRM_MERGES,
    components: Mapping[str, str] | None = None,
) -> ClassDecision:
    """Find the class of a trajectory by membership against class representatives.

    The trajectory is compared with each class's founder, never with other members, so
    a class grows only through trajectories witnessed against its founder, and by merges
    (see below), which chain classes as single linkage does. Representatives of
    another architecture than ``tester``'s are skipped. The rest are ordered by the
    Euclidean distance between their sketches and the trajectory's, concatenated over
    the fractions both recorded; ties go to the lower founding trial, so every worker
    tests in the same order. At most ``max_candidates`` are tested, so the cost does not
    grow with the number of trials.

    Only fractions the trajectory has recorded are compared, which places a running
    trial on its prefix (``final=False``): the search stops at the first witnessed
    representative. With ``previous``, the class found on a shorter prefix is tried
    first, on the new fractions only; the fractions it was already witnessed on are
    not tested again. Representatives that ``previous`` found over epsilon are skipped:
    the fraction that exceeded it stays shared, so they can never be witnessed.

    A final search (``final=True``) tests every one of the ``max_candidates`` nearest
    representatives. The trajectory joins the witnessed class with the smallest barrier.
    When it is witnessed against two or more, each other witnessed class is reported in
    ``merges`` with the joined one, after a direct test between the two representatives
    when ``confirm_merges`` (a merge then never joins founders that have a barrier
    between them).

    With ``components`` (class id to merged class id, as
    :func:`topselect.homotopy.resolve_classes` returns it), a final search skips every
    representative of a merged class that the trajectory was already witnessed against,
    untested and not counted against ``max_candidates``: a test could only record a
    merge that is already known, so the search spends its budget on other classes.
    Exact single linkage needs no test within a component either, which is how the
    all-pairs mode avoids the full matrix.

    Args:
        waypoints: The trajectory's flat parameter vectors by progress fraction.
        sketches: The trajectory's sketches by fraction.
        representatives: One representative per known class.
        load_waypoints: ``load_waypoints(reference)`` returning a representative's
            waypoints (a ``WaypointStore``'s ``load``).
        tester: Pair tester of the trajectory's architecture and the study's epsilon.
        max_candidates: Representatives tested at most, not counting the previous class
            or representatives skipped through ``components``.
        final: Whether the trajectory is complete (see above).
        previous: The decision on a shorter prefix of the same trajectory.
        confirm_merges: Whether a merge needs the two representatives witnessed directly.
        components: Merged class id of each class id; a class missing from it is its
            own component. ``None`` treats every class as its own component.

    Raises:
        InvalidInputError: When ``max_candidates < 1`` or ``sketches`` is empty.
    """
    if max_candidates < 1:
        raise InvalidInputError(f"max_candidates must be >= 1, but got {max_candidates}.")
    if not sketches:
        raise InvalidInputError("sketches must hold at least one fraction, but it is empty.")
    search = _Search(waypoints, load_waypoints, tester)
    eligible = [r for r in representatives if r.architecture in ("", tester.architecture)]
    ordered = _by_sketch_distance(eligible, sketches)

    continued = _continue_previous(search, ordered, previous)
    _carry_failures(search, previous)
    if continued is not None and not final:
        return search.decision(
            continued.class_id, (continued.class_id,), (), tuple(sorted(waypoints))
        )
    # The previous class was tested already, whether it was continued or not.
    candidates = [r for r in ordered if r.class_id not in search.barriers]
    witnessed: list[Representative] = [continued] if continued is not None else []
    component = (components or {}).get
    linked = {component(r.class_id, r.class_id) for r in witnessed}
    tested = 0
    for rep in candidates:
        if tested == max_candidates:
            break
        if component(rep.class_id, rep.class_id) in linked:
            continue
        tested += 1
        if search.test(rep).witnessed:
            witnessed.append(rep)
            linked.add(component(rep.class_id, rep.class_id))
            if not final:
                break
    if not witnessed:
        return search.decision(None, (), (), ())
    joined = min(witnessed, key=lambda r: (search.barriers[r.class_id], witnessed.index(r)))
    merges = _merges(search, joined, witnessed, final and len(witnessed) > 1, confirm_merges)
    return search.decision(
        joined.class_id,
        tuple(r.class_id for r in witnessed),
        merges,
        tuple(sorted(waypoints)),
    )


class _Search:
    """One membership search: the trajectory, its tests so far and their cost."""

    def __init__(
        self,
        waypoints: Waypoints,
        load_waypoints: Callable[[str], Waypoints],
        tester: HomotopyTester,
    ) -> None:
        self.waypoints = waypoints
        self.load = load_waypoints
        self.tester = tester
        self.barriers: dict[str, float] = {}
        self._pairs_before = tester.pair_tests
        self._evaluations_before = tester.barrier_evaluations

    def test(self, rep: Representative, fractions: Sequence[float] | None = None):
        result = self.tester.witness(
            self.waypoints, self.load(rep.waypoints_ref), fractions=fractions
        )
        self.barriers[rep.class_id] = max(
            self.barriers.get(rep.class_id, -math.inf), result.max_barrier
        )
        return result

    def decision(self, class_id, witnessed, merges, fractions) -> ClassDecision:
        return ClassDecision(
            class_id=class_id,
            barriers=dict(self.barriers),
            pair_tests=self.tester.pair_tests - self._pairs_before,
            barrier_evaluations=self.tester.barrier_evaluations - self._evaluations_before,
            witnessed=tuple(witnessed),
            merges=tuple(merges),
            fractions=tuple(fractions),
        )


def _carry_failures(search: _Search, previous: ClassDecision | None) -> None:
    """Copy the representatives that ``previous`` found over epsilon into the search."""
    if previous is None:
        return
    for class_id, barrier in previous.barriers.items():
        failed = math.isnan(barrier) or (
            math.isfinite(barrier) and barrier > search.tester.epsilon
        )
        if failed and class_id not in search.barriers:
            search.barriers[class_id] = barrier


def _continue_previous(
    search: _Search, ordered: list[Representative], previous: ClassDecision | None
) -> Representative | None:
    """Return the previous class's representative if it is witnessed on the new fractions."""
    if previous is None or previous.class_id is None:
        return None
    rep = next((r for r in ordered if r.class_id == previous.class_id), None)
    if rep is None:
        return None
    new = sorted(set(search.waypoints) - set(previous.fractions))
    if new and not search.test(rep, fractions=new).witnessed:
        return None
    search.barriers[rep.class_id] = max(
        search.barriers.get(rep.class_id, -math.inf),
        previous.barriers.get(rep.class_id, -math.inf),
    )
    return rep


def _merges(
    search: _Search,
    joined: Representative,
    witnessed: list[Representative],
    enabled: bool,
    confirm: bool,
) -> list[tuple[str, str]]:
    if not enabled:
        return []
    merges = []
    for other in witnessed:
        if other.class_id == joined.class_id:
            continue
        if confirm:
            result, computed = search.tester.witness_stored(
                joined.waypoints_ref, other.waypoints_ref, search.load
            )
            if not result.witnessed:
                log = _logger.info if computed else _logger.debug
                log(
                    "Classes %s and %s not merged: their representatives have a barrier of "
                    "%.4g (epsilon %.4g).",
                    joined.class_id,
                    other.class_id,
                    result.max_barrier,
                    search.tester.epsilon,
                )
                continue
        merges.append((joined.class_id, other.class_id))
    return merges


def _by_sketch_distance(
    representatives: Sequence[Representative], sketches: Sketches
) -> list[Representative]:
    def key(rep: Representative) -> tuple[float, int, str]:
        shared = sorted(set(sketches) & set(rep.sketches))
        if not shared:
            return (math.inf, rep.trial_number, rep.class_id)
        mine = np.concatenate([np.asarray(sketches[f], dtype=float) for f in shared])
        theirs = np.concatenate([np.asarray(rep.sketches[f], dtype=float) for f in shared])
        return (float(np.linalg.norm(mine - theirs)), rep.trial_number, rep.class_id)

    return sorted(representatives, key=key)
