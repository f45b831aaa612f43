"""Test-accuracy spread within and across homotopy classes, for several epsilons.

Claim measured: runs whose trajectories are homotopic reach test accuracy within 0.5% of
each other, while non-homotopic runs differ by more than 3% (arXiv 2510.04376). For each
data set and epsilon, the fitted runs of the cached trajectories
(``homotopy_trajectories.py``, N = 200) are grouped by the all-pairs mode (exact single
linkage, found by union-find) and by the representative mode with each ``--settings``
entry of ``homotopy_scaling.py``, prefix decisions included. When the exact barrier matrix
of ``homotopy_scaling.py --matrix-only`` is cached, complete linkage is added. For each
grouping it reports, in accuracy points:

- within classes of two or more runs: max - min per class (median and max over classes),
  the mean absolute pairwise difference, and the share of pairs within 0.5 points;
- across classes: the mean absolute pairwise difference between runs of different
  classes, the share of those pairs more than 3 points apart, and the max - min of the
  class mean accuracies.

Each epsilon's ``"fast"`` entry repeats the grouping of the first setting, the library's
default. With ``--from-scaling PATH`` no barrier is computed: the classes at the largest N of a
``homotopy_scaling.py`` result (one epsilon) are read from it.

Results go to ``benchmarks/results/homotopy_spread.json``.

Usage: ``python benchmarks/homotopy_spread.py --epsilons 0.01 0.02 0.05 0.1``.
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
import torch
from homotopy_scaling import (
    CACHE,
    FIT_LOSS,
    SETTINGS,
    Setting,
    exact_matrix,
    fitted_labels,
    fitted_mask,
    machine,
    place_runs,
)
from homotopy_trajectories import load_trajectories
from sklearn.metrics import adjusted_rand_score

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
    dataset: str, epsilons: tuple[float, ...], n: int, settings: list[Setting]
) -> dict:
    trajectories = load_trajectories(dataset, n)
    index = np.flatnonzero(fitted_mask(trajectories, n))
    accuracy = np.array([trajectories.runs[i].test_accuracy for i in index])
    result = _dataset_header(trajectories, n, index, accuracy)
    result["settings"] = [s.name for s in settings]
    for epsilon in epsilons:
        started = time.perf_counter()
        all_pairs = place_runs(trajectories, (n,), epsilon, None)[n]
        reference = fitted_labels(all_pairs, index)
        entry: dict = {
            "epsilon": epsilon,
            "all_pairs_seconds": time.perf_counter() - started,
            "all_pairs_pair_tests": all_pairs["pair_tests"],
            "groupings": {"all-pairs single": spread(reference, accuracy)},
        }
        for setting in settings:
            started = time.perf_counter()
            fast = place_runs(trajectories, (n,), epsilon, setting)[n]
            labels = fitted_labels(fast, index)
            entry["groupings"][setting.name] = {
                **spread(labels, accuracy),
                "seconds": time.perf_counter() - started,
                "pair_tests": fast["pair_tests"],
                "ari_vs_all_pairs": float(adjusted_rand_score(reference, labels)),
            }
        # Readers of the earlier layout (benchmarks/suite/homotopy.py) take "fast" as
        # the default mode, which is the first setting.
        entry["fast"] = entry["groupings"][settings[0].name]
        complete = _complete_linkage(trajectories, n, epsilon)
        if complete is not None:
            entry["groupings"]["all-pairs complete"] = spread(complete, accuracy)
        result["epsilons"].append(entry)
        _log(dataset, entry)
    return result


def from_scaling(path: Path) -> list[dict]:
    """Spread of the classes stored in a ``homotopy_scaling.py`` result, at its largest N."""
    document = json.loads(path.read_text())
    results = []
    for measured in document["results"]:
        entry_n = measured["sizes"][-1]
        n = entry_n["n"]
        trajectories = load_trajectories(measured["dataset"], n)
        index = np.flatnonzero(fitted_mask(trajectories, n))
        accuracy = np.array([trajectories.runs[i].test_accuracy for i in index])
        result = _dataset_header(trajectories, n, index, accuracy)
        groupings = {
            "all-pairs single": spread(fitted_labels(entry_n["all_pairs"], index), accuracy)
        }
        for name, snapshot in entry_n["settings"].items():
            groupings[name] = {
                **spread(fitted_labels(snapshot, index), accuracy),
                "pair_tests": snapshot["pair_tests"],
                "ari_vs_all_pairs": snapshot["ari"],
            }
        default = next(iter(SETTINGS))
        if default not in entry_n["settings"]:
            default = next(iter(entry_n["settings"]))
        entry = {
            "epsilon": measured["epsilon"],
            "groupings": groupings,
            "fast": groupings[default],
        }
        result["epsilons"].append(entry)
        _log(measured["dataset"], entry)
        results.append(result)
    return results


def _dataset_header(trajectories, n: int, index: np.ndarray, accuracy: np.ndarray) -> dict:
    return {
        "dataset": trajectories.dataset,
        "n": n,
        "fitted": int(len(index)),
        "fit_loss": FIT_LOSS[trajectories.dataset],
        "test_examples": int(len(trajectories.data.y_test)),
        "accuracy_points": {
            "min": float(100 * accuracy.min()),
            "max": float(100 * accuracy.max()),
            "mean_pairwise": spread([0] * len(index), accuracy)["within_mean_pairwise"],
        },
        "epsilons": [],
    }


def _complete_linkage(trajectories, n: int, epsilon: float) -> list | None:
    if not (CACHE / f"{trajectories.dataset}-exact.npz").exists():
        return None
    matrix = exact_matrix(trajectories)
    keep = np.flatnonzero(matrix["index"] < n)
    barriers = PairwiseBarriers(matrix["barriers"][np.ix_(keep, keep)], epsilon, True, 0, 0)
    return all_pairs_classes(barriers, epsilon, linkage="complete").tolist()


def _log(dataset: str, entry: dict) -> None:
    for name, measured in entry["groupings"].items():
        _logger.info(
            "%s eps=%g %s: %s",
            dataset,
            entry["epsilon"],
            name,
            {k: measured[k] for k in ("classes", "within_range_max", "across_mean_pairwise")},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument("--epsilons", nargs="+", type=float, default=list(EPSILONS))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--output", type=Path, default=RESULTS / "homotopy_spread.json")
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=sorted(SETTINGS),
        default=[next(iter(SETTINGS))],
        help="representative-mode settings of homotopy_scaling.py to group by",
    )
    parser.add_argument(
        "--from-scaling",
        type=Path,
        default=None,
        help="read the classes from this homotopy_scaling.py result instead",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    document: dict = {"machine": machine()}
    if args.from_scaling is not None:
        document["from_scaling"] = str(args.from_scaling)
        document["results"] = from_scaling(args.from_scaling)
    else:
        settings = [SETTINGS[name] for name in args.settings]
        document["results"] = [
            benchmark_dataset(dataset, tuple(args.epsilons), args.runs, settings)
            for dataset in args.datasets
        ]
    document["machine"]["load_average_end"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1))
    _logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
