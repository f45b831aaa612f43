"""Class ids after merges, and an in-memory class registry for studies outside Optuna."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from topselect.exceptions import InvalidInputError
from topselect.homotopy._classes import (
    DEFAULT_CONFIRM_MERGES,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_PREFIX_CANDIDATES,
    ClassDecision,
    HomotopyTester,
    Representative,
    Sketches,
    Waypoints,
    assign_class,
)
from topselect.homotopy._store import WaypointDtype, decode_waypoints, encode_waypoints

__all__ = ["ClassMode", "ClassRegistry", "resolve_classes"]

#: ``"representatives"``: membership against one founder per class (O(N*C) pair tests).
#: ``"all_pairs"``: every fitted trial is stored, and classes are the connected components
#: of the witnessed pairs (exact single linkage). A new trial is tested against earlier
#: ones until it is witnessed against one member of each class it links to, so members of
#: a class it already joined are skipped. That is at most N(N-1)/2 pair tests, and far
#: fewer when classes are large.
ClassMode = Literal["representatives", "all_pairs"]


def resolve_classes(
    founders: Mapping[str, int], merges: Iterable[tuple[str, str]]
) -> dict[str, str]:
    """Map every class id to the id of the merged class it belongs to.

    Merged classes form connected components, and each component is named after the
    class founded by the lowest trial number (ties and classes with no known founder
    sort by id, after every known founder). The result depends only on the set of
    founders and merges, never on the order in which they were recorded, so every
    process that reads the same storage resolves the same ids.

    Args:
        founders: Founding trial number of each class id.
        merges: Pairs of class ids that were found to be one class.

    Returns:
        A mapping from every class id in ``founders`` or ``merges`` to its merged id.
    """
    parent: dict[str, str] = {class_id: class_id for class_id in founders}

    def key(class_id: str) -> tuple[float, str]:
        return (founders.get(class_id, math.inf), class_id)

    def find(class_id: str) -> str:
        parent.setdefault(class_id, class_id)
        root = class_id
        while parent[root] != root:
            root = parent[root]
        while parent[class_id] != root:
            parent[class_id], class_id = root, parent[class_id]
        return root

    for a, b in merges:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            low, high = sorted((root_a, root_b), key=key)
            parent[high] = low
    return {class_id: find(class_id) for class_id in list(parent)}


@dataclass
class _Trial:
    architecture: str
    class_id: str | None
    fitted: bool
    final: bool


@dataclass
class ClassRegistry:
    """Homotopy classes of a set of trajectories, kept in memory.

    This is the state the trial tracker keeps in Optuna storage (founders, their stored
    waypoints, each trial's class and the merges it found), for use outside a study: in
    benchmarks, tests and offline analysis. Both apply the same rules: only a complete,
    fitted trajectory founds a class or merges classes, a running trajectory is placed
    on its prefix, and architectures never mix.

    Attributes:
        testers: One :class:`HomotopyTester` per architecture signature.
        mode: See :data:`ClassMode`.
        max_candidates: Representatives tested per final search in ``"representatives"``
            mode.
        prefix_candidates: Representatives tested per search on a prefix (a running
            trajectory), in both modes.
        confirm_merges: Whether a merge needs the two representatives witnessed directly.
        waypoint_dtype: Precision in which founders' waypoints are kept. ``"float16"``
            rounds them as a float16 waypoint store would.
        representatives: Every founder, in founding order.
        merges: Every merge recorded, in order.
    """

    testers: Mapping[str, HomotopyTester]
    mode: ClassMode = "representatives"
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    prefix_candidates: int = DEFAULT_PREFIX_CANDIDATES
    confirm_merges: bool = DEFAULT_CONFIRM_MERGES
    waypoint_dtype: WaypointDtype = "float32"
    representatives: list[Representative] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)
    _waypoints: dict[str, Waypoints] = field(default_factory=dict)
    _trials: dict[int, _Trial] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("representatives", "all_pairs"):
            raise InvalidInputError(
                f"mode must be 'representatives' or 'all_pairs', but got {self.mode!r}."
            )
        if self.max_candidates < 1:
            raise InvalidInputError(f"max_candidates must be >= 1, but got {self.max_candidates}.")
        if self.prefix_candidates < 1:
            raise InvalidInputError(
                f"prefix_candidates must be >= 1, but got {self.prefix_candidates}."
            )

    def place(
        self,
        trial_number: int,
        waypoints: Waypoints,
        sketches: Sketches,
        *,
        architecture: str,
        fitted: bool,
        final: bool = True,
        previous: ClassDecision | None = None,
    ) -> ClassDecision:
        """Place one trajectory, or a prefix of it, and record the outcome.

        A final, fitted trajectory that joins no class founds one named
        ``c<trial_number>``. A final, unfitted one gets no class and no test: a
        half-trained point on the way into a basin has no barrier to that basin's
        minimum, so it would join classes it does not belong to.

        Args:
            trial_number: Unique number of the trajectory; founders are named after it.
            waypoints: Flat parameter vectors by progress fraction.
            sketches: Their sketches by fraction.
            architecture: The trajectory's architecture signature.
            fitted: Whether the finished run reached the fitted loss (ignored unless final).
            final: Whether the trajectory is complete.
            previous: The decision on a shorter prefix of the same trajectory.

        Raises:
            InvalidInputError: When no tester is registered for ``architecture``.
        """
        tester = self.testers.get(architecture)
        if tester is None:
            raise InvalidInputError(
                f"no HomotopyTester for architecture {architecture!r}; registered: "
                f"{sorted(self.testers)}."
            )
        if final and not fitted:
            self._trials[trial_number] = _Trial(architecture, None, False, True)
            return ClassDecision(None)
        reps = [r for r in self.representatives if r.architecture == architecture]
        all_pairs = self.mode == "all_pairs" and final
        if all_pairs:
            candidates = max(len(reps), 1)
        else:
            candidates = self.max_candidates if final else self.prefix_candidates
        decision = assign_class(
            waypoints,
            sketches,
            reps,
            self._waypoints.__getitem__,
            tester,
            max_candidates=candidates,
            final=final,
            previous=previous,
            confirm_merges=self.confirm_merges and not all_pairs,
            components=self._components(),
        )
        class_id = decision.class_id
        if final and (class_id is None or all_pairs):
            founded = self._found(trial_number, waypoints, sketches, architecture)
            if all_pairs:
                self.merges.extend((founded, other) for other in decision.witnessed)
            class_id = founded
        if final and not all_pairs:
            # In all-pairs mode the links from the founder above already cover these.
            self.merges.extend(decision.merges)
        self._trials[trial_number] = _Trial(architecture, class_id, fitted, final)
        return decision

    def labels(self) -> dict[int, str | None]:
        """Return each placed trial's class id after merges (``None`` when it has none)."""
        resolved = self._components()
        return {
            number: None if trial.class_id is None else resolved.get(trial.class_id)
            for number, trial in sorted(self._trials.items())
        }

    def _components(self) -> dict[str, str]:
        return resolve_classes(
            {r.class_id: r.trial_number for r in self.representatives}, self.merges
        )

    def _found(
        self, trial_number: int, waypoints: Waypoints, sketches: Sketches, architecture: str
    ) -> str:
        class_id = f"c{trial_number}"
        reference = f"memory:{trial_number}"
        data, _ = encode_waypoints(waypoints, self.waypoint_dtype)
        self._waypoints[reference] = decode_waypoints(data)
        self.representatives.append(
            Representative(class_id, trial_number, dict(sketches), reference, architecture)
        )
        return class_id
