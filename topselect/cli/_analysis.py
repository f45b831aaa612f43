"""Computations of ``topselect compare`` on runs read from MLflow.

Diagram distances, the class summary and functional equivalence. Each works on plain
data (records, diagrams, probe outputs) so it is independent of how runs were read.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from topselect.search import RankedTrial
    from topselect.tracking import ProbeOutputs

__all__ = [
    "DEFAULT_AGREEMENT_THRESHOLD",
    "DEFAULT_CKA_THRESHOLD",
    "DistanceMatrix",
    "Equivalence",
    "class_summary",
    "distance_matrices",
    "functional_equivalence",
]

# NOTE: provisional thresholds, not yet calibrated by a benchmark: 95% of probe examples
# predicted alike and linear CKA of 0.9 between penultimate features.
#: Smallest prediction agreement at which two trials count as functionally equivalent.
DEFAULT_AGREEMENT_THRESHOLD = 0.95
#: Smallest linear CKA at which two trials count as functionally equivalent.
DEFAULT_CKA_THRESHOLD = 0.9


@dataclass(frozen=True)
class DistanceMatrix:
    """Pairwise distances between the diagrams of one homology dimension.

    Attributes:
        metric: ``"bottleneck"``, ``"wasserstein"`` or ``"sliced"``.
        dimension: ``"h0"`` or ``"h1"``.
        labels: Trial label of each row and column.
        run_ids: Run id of each row and column.
        values: ``(n, n)`` symmetric distances in loss units; ``inf`` where the two
            diagrams have different numbers of essential bars.
        essential: Number of essential bars of each diagram.
    """

    metric: str
    dimension: str
    labels: list[str]
    run_ids: list[str]
    values: np.ndarray
    essential: list[int]


def distance_matrices(
    diagrams: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    run_ids: Sequence[str],
    labels: Sequence[str],
    metric: str,
    *,
    dimensions: Sequence[str] = ("h0", "h1"),
    max_points: int | None = 500,
) -> list[DistanceMatrix]:
    """Compute one distance matrix per homology dimension, in the order of ``run_ids``.

    Uses :func:`topselect.topology.diagram_distance_matrix`, which keeps essential bars
    (an infinite distance when their counts differ) and truncates diagrams with more than
    ``max_points`` finite bars for the exact metrics.
    """
    from topselect.topology import diagram_distance_matrix

    out = []
    for dimension in dimensions:
        bars = [np.asarray(diagrams[r][dimension], dtype=float).reshape(-1, 2) for r in run_ids]
        values = diagram_distance_matrix(bars, metric, max_points=max_points)  # type: ignore[arg-type]
        essential = [int(np.sum(~np.isfinite(b[:, 1]))) for b in bars]
        out.append(
            DistanceMatrix(metric, dimension, list(labels), list(run_ids), values, essential)
        )
    return out


def class_summary(
    ranking: Sequence[RankedTrial],
    *,
    maximize: bool,
    score: str,
) -> list[dict[str, Any]]:
    """Summarize each homotopy class of the ranked trials.

    Returns:
        One row per class, largest first: ``class_id``, ``size``, ``members`` (trial
        numbers), ``best_trial`` (by adjusted value), ``best_rank``, the spread (max minus
        min) and population standard deviation of the members' values, and the spread of
        their ``score``. Spreads are ``None`` without two finite values.
    """
    members: dict[str, list[RankedTrial]] = {}
    for entry in ranking:
        if entry.record.class_id is not None:
            members.setdefault(entry.record.class_id, []).append(entry)
    rows: list[dict[str, Any]] = []
    for class_id, entries in members.items():
        values = _finite_values(e.ranked_value for e in entries)
        finite_scores = _finite_values(e.record.scores.get(score) for e in entries)
        ranked = [e for e in entries if e.rank is not None]
        best = min(ranked, key=lambda e: e.rank or 0) if ranked else None
        rows.append(
            {
                "class_id": class_id,
                "size": len(entries),
                "members": sorted(e.record.number for e in entries),
                "best_trial": best.record.number if best else None,
                "best_rank": best.rank if best else None,
                "value_spread": _spread(values),
                "value_std": statistics.pstdev(values) if len(values) > 1 else None,
                "score_spread": _spread(finite_scores),
            }
        )
    rows.sort(key=lambda row: (-row["size"], row["class_id"]))
    return rows


def _finite_values(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _spread(values: Sequence[float]) -> float | None:
    return max(values) - min(values) if len(values) > 1 else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass
class Equivalence:
    """Functional equivalence between trials on the probe set.

    Attributes:
        labels: Trial label of each row and column.
        run_ids: Run id of each row and column.
        agreement: ``(n, n)`` prediction agreement, NaN where undefined.
        cka: ``(n, n)`` linear CKA of penultimate features, NaN where undefined.
        groups: One row per pair of groups (by class and by each grouping param):
            ``group_by``, ``a``, ``b``, ``pairs``, ``mean_agreement``, ``mean_cka`` and
            ``equivalent`` (the share of pairs above both thresholds).
        agreement_threshold: Agreement at and above which a pair is equivalent.
        cka_threshold: CKA at and above which a pair is equivalent.
        notes: Pairs left undefined and why.
    """

    labels: list[str]
    run_ids: list[str]
    agreement: np.ndarray
    cka: np.ndarray
    groups: list[dict[str, Any]] = field(default_factory=list)
    agreement_threshold: float = DEFAULT_AGREEMENT_THRESHOLD
    cka_threshold: float = DEFAULT_CKA_THRESHOLD
    notes: list[str] = field(default_factory=list)


def functional_equivalence(
    outputs: Mapping[str, ProbeOutputs],
    run_ids: Sequence[str],
    labels: Sequence[str],
    groupings: Mapping[str, Mapping[str, str | None]],
    *,
    agreement_threshold: float = DEFAULT_AGREEMENT_THRESHOLD,
    cka_threshold: float = DEFAULT_CKA_THRESHOLD,
) -> Equivalence:
    """Compute pairwise agreement and linear CKA, and summarize them between groups.

    Pairs measured on different probe sets (different fingerprints) are left undefined.

    Args:
        outputs: Probe outputs by run id.
        run_ids: Runs to compare, in matrix order; each must be in ``outputs``.
        labels: Trial label of each run.
        groupings: Group name of each run id, per grouping (e.g. ``{"class": ...,
            "optimizer": ...}``); runs without a group are left out of that grouping.
        agreement_threshold: See :data:`DEFAULT_AGREEMENT_THRESHOLD`.
        cka_threshold: See :data:`DEFAULT_CKA_THRESHOLD`.
    """
    from topselect.tracking import linear_cka, prediction_agreement

    n = len(run_ids)
    agreement = np.full((n, n), np.nan)
    cka = _gram_cka([outputs[r].features for r in run_ids])
    mismatched = 0
    for i in range(n):
        for j in range(i, n):
            a, b = outputs[run_ids[i]], outputs[run_ids[j]]
            if a.probe_fingerprint != b.probe_fingerprint:
                mismatched += 1
                cka[i, j] = cka[j, i] = np.nan
                continue
            agree = prediction_agreement(a.predictions, b.predictions)
            agreement[i, j] = agreement[j, i] = np.nan if agree is None else agree
            if np.isnan(cka[i, j]):
                similar = linear_cka(a.features, b.features)
                cka[i, j] = cka[j, i] = np.nan if similar is None else similar
    result = Equivalence(
        list(labels), list(run_ids), agreement, cka,
        agreement_threshold=agreement_threshold, cka_threshold=cka_threshold,
    )  # fmt: skip
    if mismatched:
        result.notes.append(
            f"{mismatched} pairs were measured on different probe sets (fingerprints "
            "differ) and are left undefined."
        )
    for name, grouping in groupings.items():
        result.groups.extend(_group_rows(result, name, grouping))
    return result


def _gram_cka(features: Sequence[np.ndarray]) -> np.ndarray:
    """Return linear CKA of every pair at once, through their Gram matrices.

    With centered ``X``, ``||Y^T X||_F^2`` equals the elementwise product sum of the Gram
    matrices ``X X^T`` and ``Y Y^T``. So one matrix product of the stacked, flattened
    Grams gives every numerator. For 100 trials of 512 examples that is one product of a
    100 x 262,144 matrix with its transpose, in place of 5,050 pairs of feature products.
    Pairs of different example counts, and constant features, are NaN here and computed
    pair by pair by the caller.
    """
    n = len(features)
    out = np.full((n, n), np.nan)
    counts = {f.shape[0] for f in features}
    if n == 0 or len(counts) != 1:
        return out
    grams = []
    for x in features:
        centered = np.asarray(x, dtype=np.float64)
        centered = centered - centered.mean(axis=0, keepdims=True)
        grams.append((centered @ centered.T).ravel())
    stacked = np.stack(grams)
    products = stacked @ stacked.T
    norms = np.sqrt(np.clip(np.diag(products), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = products / np.outer(norms, norms)
    out[~np.isfinite(out)] = np.nan
    return np.clip(out, 0.0, 1.0)


def _group_rows(
    result: Equivalence, name: str, grouping: Mapping[str, str | None]
) -> list[dict[str, Any]]:
    index = {run_id: i for i, run_id in enumerate(result.run_ids)}
    members: dict[str, list[int]] = {}
    for run_id, group in grouping.items():
        if group is not None and run_id in index:
            members.setdefault(group, []).append(index[run_id])
    names = sorted(members)
    rows = []
    for x, a in enumerate(names):
        for b in names[x:]:
            pairs = [
                (i, j) for i in members[a] for j in members[b] if i != j and (a != b or i < j)
            ]
            if not pairs:
                continue
            agree = [result.agreement[i, j] for i, j in pairs]
            similar = [result.cka[i, j] for i, j in pairs]
            equivalent = [
                g >= result.agreement_threshold and c >= result.cka_threshold
                for g, c in zip(agree, similar, strict=True)
                if not (math.isnan(g) or math.isnan(c))
            ]
            rows.append(
                {
                    "group_by": name,
                    "a": a,
                    "b": b,
                    "pairs": len(pairs),
                    "mean_agreement": _nanmean(agree),
                    "mean_cka": _nanmean(similar),
                    "equivalent": sum(equivalent) / len(equivalent) if equivalent else None,
                }
            )
    return rows


def _nanmean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None
