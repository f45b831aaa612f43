"""Test-accuracy spread within and across homotopy classes, for several epsilons.

Claim measured: runs whose trajectories are homotopic reach test accuracy within 0.5% of
each other, while non-homotopic runs differ by more than 3% (arXiv 2510.04376). For each
data set and epsilon, the fitted runs of the cached trajectories
(``homotopy_trajectories.py``, N = 200) are grouped three ways: the fast mode
(``ClassRegistry``, as the tracker places trials, prefix decisions included), and the
all-pairs classes with single and with complete linkage from the exact barrier matrix
that ``homotopy_scaling.py`` caches. For each grouping it reports, in accuracy points:

- within classes of two or more runs: max - min per class (median and max over classes),
  the mean absolute pairwise difference, and the share of pairs within 0.5 points;
- across classes: the mean absolute pairwise difference between runs of different
  classes, the share of those pairs more than 3 points apart, and the max - min of the
  class mean accuracies.

Results go to ``benchmarks/results/homotopy_spread.json``.

Usage: ``python benchmarks/homotopy_spread.py`` (after ``homotopy_scaling.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from homotopy_scaling import FIT_LOSS, MAX_CANDIDATES, exact_matrix, machine, run_fast
from homotopy_trajectories import load_trajectories

from topselect.homotopy import PairwiseBarriers, all_pairs_classes

RESULTS = Path(__file__).resolve().parent / "results"
EPSILONS = (0.01, 0.02, 0.05, 0.1)
WITHIN_POINTS = 0.5
ACROSS_POINTS = 3.0

_logger = logging.getLogger("homotopy_spread")


def spread(labels: list, accuracy: np.ndarray) -> dict:
    """Within- and across-class spread of ``accuracy`` (fractions) in accuracy points."""
    points = 100 * accuracy
    classes: dict = {}
    for i, label in enumerate(labels):
        classes.setdefault(label, []).append(i)
    within_pairs, across_pairs, ranges = [], [], []
    for members in classes.values():
        if len(members) > 1:
            ranges.append(float(points[members].max() - points[members].min()))
    for i, j in itertools.combinations(range(len(labels)), 2):
        difference = abs(float(points[i] - points[j]))
        (within_pairs if labels[i] == labels[j] else across_pairs).append(difference)
    means = [float(points[m].mean()) for m in classes.values()]
    sizes = sorted((len(m) for m in classes.values()), reverse=True)
    return {
        "classes": len(classes),
        "largest_classes": sizes[:5],
        "singletons": sum(1 for s in sizes if s == 1),
        "within_range_median": float(np.median(ranges)) if ranges else None,
        "within_range_max": float(max(ranges)) if ranges else None,
        "within_mean_pairwise": float(np.mean(within_pairs)) if within_pairs else None,
        "within_share_below_0_5": (
            float(np.mean(np.array(within_pairs) < WITHIN_POINTS)) if within_pairs else None
        ),
        "within_pairs": len(within_pairs),
        "across_mean_pairwise": float(np.mean(across_pairs)) if across_pairs else None,
        "across_share_above_3": (
            float(np.mean(np.array(across_pairs) > ACROSS_POINTS)) if across_pairs else None
        ),
        "across_pairs": len(across_pairs),
        "class_mean_range": float(max(means) - min(means)) if len(means) > 1 else None,
    }


def benchmark_dataset(
    dataset: str,
    epsilons: tuple[float, ...],
    n: int,
    max_candidates: int = MAX_CANDIDATES,
    confirm_merges: bool = True,
) -> dict:
    trajectories = load_trajectories(dataset, n)
    matrix = exact_matrix(load_trajectories(dataset))
    keep = np.flatnonzero(matrix["index"] < n)
    index = matrix["index"][keep]
    sub = matrix["barriers"][np.ix_(keep, keep)]
    accuracy = np.array([trajectories.runs[i].test_accuracy for i in index])
    upper = sub[np.triu_indices(len(keep), k=1)]
    result: dict = {
        "dataset": dataset,
        "n": n,
        "fitted": int(len(index)),
        "fit_loss": FIT_LOSS[dataset],
        "max_candidates": max_candidates,
        "confirm_merges": confirm_merges,
        "test_examples": int(len(trajectories.data.y_test)),
        "accuracy_points": {
            "min": float(100 * accuracy.min()),
            "max": float(100 * accuracy.max()),
            "mean_pairwise": spread([0] * len(index), accuracy)["within_mean_pairwise"],
        },
        "barrier_quantiles": {
            str(q): float(np.quantile(upper, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)
        },
        "epsilons": [],
    }
    for epsilon in epsilons:
        barriers = PairwiseBarriers(sub, epsilon, True, 0, 0)
        single = all_pairs_classes(barriers, epsilon, linkage="single").tolist()
        complete = all_pairs_classes(barriers, epsilon, linkage="complete").tolist()
        started = time.perf_counter()
        fast = run_fast(
            trajectories,
            n,
            epsilon,
            max_candidates=max_candidates,
            confirm_merges=confirm_merges,
        )
        fast_labels = [fast["labels"][i] for i in index]
        entry = {
            "epsilon": epsilon,
            "fast_seconds": time.perf_counter() - started,
            "fast_pair_tests": fast["pair_tests"],
            "fast": spread(fast_labels, accuracy),
            "all_pairs_single": spread(single, accuracy),
            "all_pairs_complete": spread(complete, accuracy),
        }
        result["epsilons"].append(entry)
        _logger.info(
            "%s eps=%g: fast %s | complete %s",
            dataset,
            epsilon,
            {k: entry["fast"][k] for k in ("classes", "within_range_max", "across_mean_pairwise")},
            {
                k: entry["all_pairs_complete"][k]
                for k in ("classes", "within_range_max", "across_mean_pairwise")
            },
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument("--epsilons", nargs="+", type=float, default=list(EPSILONS))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--output", type=Path, default=RESULTS / "homotopy_spread.json")
    parser.add_argument(
        "--max-candidates", type=int, default=MAX_CANDIDATES, help="representatives per search"
    )
    parser.add_argument(
        "--no-confirm-merges",
        action="store_true",
        help="merge two classes on a linking trial alone, without testing their founders",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    document = {
        "machine": machine(),
        "results": [
            benchmark_dataset(
                dataset,
                tuple(args.epsilons),
                args.runs,
                args.max_candidates,
                not args.no_confirm_merges,
            )
            for dataset in args.datasets
        ],
    }
    document["machine"]["load_average_end"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1))
    _logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
