"""Cost and agreement of representative-based homotopy classes against all-pairs classes.

For N = 25, 50, 100, 200 of the cached trajectories (``homotopy_trajectories.py``), in
trial order:

- fast mode: ``ClassRegistry`` in ``"representatives"`` mode, as the tracker places
  trials. Each trial is placed on its prefixes at fractions 0.5, 0.625, 0.75 and 0.875
  (a running trial with the default ``class_warmup``), then, when fitted, on its full
  trajectory. Pair tests are counted with and without the prefix decisions, and each N
  is timed from scratch.
- all-pairs: the exact barrier matrix of all fitted runs (every shared fraction of every
  pair), computed once and cached with the wall time of each pair. The exact mode's time
  at N is the sum of its pairs' measured times. Its single linkage is what the tracker's
  ``"all_pairs"`` mode computes, and complete linkage is reported too. Up to
  ``--direct-all-pairs`` (default 50), the early-stopping all-pairs mode
  (``pairwise_barriers``) is also run and timed directly, right after the fast mode.

It reports pair tests against N (N - 1) / 2, wall times and their ratios, and the
adjusted Rand index of the fast classes against both all-pairs linkages over the fitted
runs. A side-by-side timing of the loop and vmap strategies of the barrier comes first.
Results go to ``benchmarks/results/homotopy_scaling.json``.

Usage: ``python benchmarks/homotopy_scaling.py --matrix-only`` (slow, cached), then
``python benchmarks/homotopy_scaling.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from homotopy_trajectories import CACHE, TrajectorySet, load_trajectories
from sklearn.metrics import adjusted_rand_score

from topselect.homotopy import (
    ClassRegistry,
    HomotopyTester,
    PairwiseBarriers,
    all_pairs_classes,
    architecture_signature,
    pairwise_barriers,
)

RESULTS = Path(__file__).resolve().parent / "results"
#: Probe-set loss up to which a run counts as fitted (the tracker's default is 0.1).
FIT_LOSS = {"digits": 0.1, "mnist1d": 0.1}
EPSILON = 0.05
MAX_CANDIDATES = 3
CLASS_WARMUP = 0.5
SIZES = (25, 50, 100, 200)

_logger = logging.getLogger("homotopy_scaling")


def make_tester(trajectories: TrajectorySet, epsilon: float, strategy: str = "auto"):
    return HomotopyTester(
        trajectories.model(),
        F.cross_entropy,
        trajectories.probe,
        epsilon=epsilon,
        strategy=strategy,  # type: ignore[arg-type]
    )


def fitted_mask(trajectories: TrajectorySet, n: int) -> np.ndarray:
    limit = FIT_LOSS[trajectories.dataset]
    return np.array([run.train_loss <= limit for run in trajectories.runs[:n]])


def run_fast(
    trajectories: TrajectorySet,
    n: int,
    epsilon: float,
    *,
    max_candidates: int = MAX_CANDIDATES,
    confirm_merges: bool = True,
    prefixes: bool = True,
    waypoint_dtype: str = "float32",
) -> dict:
    """Place the first ``n`` trajectories as the tracker would, and count the cost."""
    tester = make_tester(trajectories, epsilon)
    architecture = architecture_signature(trajectories.model())
    registry = ClassRegistry(
        {architecture: tester},
        max_candidates=max_candidates,
        confirm_merges=confirm_merges,
        waypoint_dtype=waypoint_dtype,  # type: ignore[arg-type]
    )
    fitted = fitted_mask(trajectories, n)
    prefix_pairs = prefix_evaluations = 0
    started = time.perf_counter()
    for number, run in enumerate(trajectories.runs[:n]):
        previous = None
        if prefixes:
            for last in sorted(run.waypoints):
                if not CLASS_WARMUP <= last < 1.0:
                    continue
                keep = [f for f in run.waypoints if f <= last]
                previous = registry.place(
                    number,
                    {f: run.waypoints[f] for f in keep},
                    {f: run.sketches[f] for f in keep},
                    architecture=architecture,
                    fitted=False,
                    final=False,
                    previous=previous,
                )
                prefix_pairs += previous.pair_tests
                prefix_evaluations += previous.barrier_evaluations
        registry.place(
            number,
            run.waypoints,
            run.sketches,
            architecture=architecture,
            fitted=bool(fitted[number]),
            final=True,
            previous=previous,
        )
    seconds = time.perf_counter() - started
    labels = registry.labels()
    return {
        "seconds": seconds,
        "pair_tests": tester.pair_tests,
        "barrier_evaluations": tester.barrier_evaluations,
        "final_pair_tests": tester.pair_tests - prefix_pairs,
        "final_barrier_evaluations": tester.barrier_evaluations - prefix_evaluations,
        "classes": len({c for c in labels.values() if c is not None}),
        "representatives": len(registry.representatives),
        "merges": len(registry.merges),
        "labels": [labels[i] for i in range(n)],
    }


def exact_matrix(trajectories: TrajectorySet, *, refresh: bool = False) -> dict:
    """Return the exact pairwise barriers of all fitted runs, each pair timed; cached.

    Every shared fraction of every pair is evaluated (``stop_early=False``), so the
    matrix serves any epsilon and any prefix of the trial order.
    """
    path = CACHE / f"{trajectories.dataset}-exact.npz"
    if path.exists() and not refresh:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    fitted = np.flatnonzero(fitted_mask(trajectories, len(trajectories.runs)))
    tester = make_tester(trajectories, EPSILON)
    size = len(fitted)
    barriers = np.zeros((size, size))
    last = np.zeros((size, size))
    seconds = np.zeros((size, size))
    started = time.perf_counter()
    for i in range(size):
        for j in range(i + 1, size):
            pair_started = time.perf_counter()
            result = tester.witness(
                trajectories.runs[fitted[i]].waypoints,
                trajectories.runs[fitted[j]].waypoints,
                stop_early=False,
            )
            seconds[i, j] = seconds[j, i] = time.perf_counter() - pair_started
            barriers[i, j] = barriers[j, i] = result.max_barrier
            last[i, j] = last[j, i] = result.barriers[max(result.barriers)]
        if i % 20 == 0:
            _logger.info(
                "%s exact matrix: row %d/%d, %.0f s",
                trajectories.dataset,
                i,
                size,
                time.perf_counter() - started,
            )
    matrix = {"index": fitted, "barriers": barriers, "last": last, "seconds": seconds}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **matrix)
    return matrix


def all_pairs_at(matrix: dict, n: int, epsilon: float, n_fractions: int) -> dict:
    """All-pairs classes and cost among the fitted runs of the first ``n``.

    Wall time of the exact mode is the sum of the measured times of its pairs. The early
    stopping mode's segment count follows from the exact barriers: one segment when the
    last fraction's barrier exceeds epsilon, every fraction otherwise.
    """
    keep = np.flatnonzero(matrix["index"] < n)
    sub = matrix["barriers"][np.ix_(keep, keep)]
    last = matrix["last"][np.ix_(keep, keep)]
    upper = np.triu_indices(len(keep), k=1)
    barriers = PairwiseBarriers(sub, epsilon, True, len(upper[0]), len(upper[0]) * n_fractions)
    single = all_pairs_classes(barriers, epsilon, linkage="single")
    complete = all_pairs_classes(barriers, epsilon, linkage="complete")
    stopped = last[upper] > epsilon
    return {
        "fitted": int(len(keep)),
        "pair_tests": int(len(upper[0])),
        "exact_barrier_evaluations": int(len(upper[0]) * n_fractions),
        "exact_seconds": float(matrix["seconds"][np.ix_(keep, keep)][upper].sum()),
        "early_stop_barrier_evaluations": int(stopped.sum() + (~stopped).sum() * n_fractions),
        "single_classes": int(len(set(single.tolist()))),
        "complete_classes": int(len(set(complete.tolist()))),
        "single": single.tolist(),
        "complete": complete.tolist(),
        "index": matrix["index"][keep].tolist(),
    }


def run_all_pairs_early(trajectories: TrajectorySet, n: int, epsilon: float) -> dict:
    """Time the early-stopping all-pairs mode directly on the fitted runs of the first n."""
    index = np.flatnonzero(fitted_mask(trajectories, n))
    tester = make_tester(trajectories, epsilon)
    started = time.perf_counter()
    barriers = pairwise_barriers([trajectories.runs[i].waypoints for i in index], tester)
    return {
        "seconds": time.perf_counter() - started,
        "pair_tests": barriers.pair_tests,
        "barrier_evaluations": barriers.barrier_evaluations,
    }


def agreement(fast: dict, all_pairs: dict) -> dict:
    """Adjusted Rand index of the fast classes against both all-pairs linkages (fitted only)."""
    fast_labels = [fast["labels"][i] for i in all_pairs["index"]]
    if any(label is None for label in fast_labels):
        raise RuntimeError("a fitted trajectory has no class in the fast mode")
    return {
        "ari_single": float(adjusted_rand_score(all_pairs["single"], fast_labels)),
        "ari_complete": float(adjusted_rand_score(all_pairs["complete"], fast_labels)),
    }


def strategy_timing(trajectories: TrajectorySet, pairs: int = 20) -> dict:
    """Time ``pairs`` exact pair tests with the loop and with vmap, interleaved."""
    runs = trajectories.runs
    chosen = [(runs[i].waypoints, runs[i + 1].waypoints) for i in range(pairs)]
    timings: dict[str, list[float]] = {"loop": [], "vmap": []}
    for repeat in range(2):
        for strategy in ("loop", "vmap"):
            tester = make_tester(trajectories, EPSILON, strategy)
            started = time.perf_counter()
            for a, b in chosen:
                tester.witness(a, b, stop_early=False)
            if repeat:  # The first repeat warms both up.
                timings[strategy].append(time.perf_counter() - started)
    loop, vmap = timings["loop"][0], timings["vmap"][0]
    return {
        "pairs": pairs,
        "loop_seconds": loop,
        "vmap_seconds": vmap,
        "loop_over_vmap": loop / vmap,
    }


def benchmark_dataset(
    dataset: str,
    sizes: tuple[int, ...],
    epsilon: float,
    direct_all_pairs: int,
    max_candidates: int = MAX_CANDIDATES,
    confirm_merges: bool = True,
) -> dict:
    trajectories = load_trajectories(dataset, max(sizes))
    n_parameters = int(trajectories.runs[0].waypoints[0.0].numel())
    n_fractions = len(trajectories.runs[0].waypoints)
    matrix = exact_matrix(trajectories)
    result: dict = {
        "dataset": dataset,
        "n_parameters": n_parameters,
        "fit_loss": FIT_LOSS[dataset],
        "epsilon": epsilon,
        "max_candidates": max_candidates,
        "confirm_merges": confirm_merges,
        "exact_matrix_seconds": float(np.triu(matrix["seconds"], k=1).sum()),
        "strategy_timing": strategy_timing(trajectories),
        "sizes": [],
    }
    _logger.info("%s strategies: %s", dataset, result["strategy_timing"])
    for n in sizes:
        fast = run_fast(
            trajectories,
            n,
            epsilon,
            max_candidates=max_candidates,
            confirm_merges=confirm_merges,
        )
        all_pairs = all_pairs_at(matrix, n, epsilon, n_fractions)
        n_pairs = n * (n - 1) // 2
        entry = {
            "n": n,
            "n_pairs": n_pairs,
            "fast": fast,
            "all_pairs": all_pairs,
            "fast_fraction_of_pairs": fast["pair_tests"] / n_pairs,
            "fast_final_fraction_of_pairs": fast["final_pair_tests"] / n_pairs,
            "fast_over_exact_all_pairs_seconds": fast["seconds"] / all_pairs["exact_seconds"],
            **agreement(fast, all_pairs),
        }
        if n <= direct_all_pairs:
            early = run_all_pairs_early(trajectories, n, epsilon)
            entry["all_pairs_early_stop"] = early
            entry["fast_over_early_stop_seconds"] = fast["seconds"] / early["seconds"]
        if n == max(sizes):
            half = run_fast(
                trajectories,
                n,
                epsilon,
                max_candidates=max_candidates,
                confirm_merges=confirm_merges,
                waypoint_dtype="float16",
            )
            entry["fast_float16"] = {
                key: half[key] for key in ("seconds", "pair_tests", "classes", "merges")
            }
            entry["ari_float16_vs_float32"] = float(
                adjusted_rand_score(
                    [fast["labels"][i] for i in all_pairs["index"]],
                    [half["labels"][i] for i in all_pairs["index"]],
                )
            )
        result["sizes"].append(entry)
        _logger.info(
            "%s N=%d: fast %d pair tests (%.1f%% of pairs; final only %.1f%%), %.1f s; "
            "exact all-pairs %d pairs, %.1f s; ARI single %.3f complete %.3f",
            dataset,
            n,
            fast["pair_tests"],
            100 * entry["fast_fraction_of_pairs"],
            100 * entry["fast_final_fraction_of_pairs"],
            fast["seconds"],
            all_pairs["pair_tests"],
            all_pairs["exact_seconds"],
            entry["ari_single"],
            entry["ari_complete"],
        )
    return result


def machine() -> dict:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": date.today().isoformat(),
        "commit": commit,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "load_average_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--epsilon", type=float, default=EPSILON, help="loss units (nats)")
    parser.add_argument("--output", type=Path, default=RESULTS / "homotopy_scaling.json")
    parser.add_argument(
        "--direct-all-pairs",
        type=int,
        default=50,
        help="largest N at which the early-stopping all-pairs mode is also timed directly",
    )
    parser.add_argument(
        "--matrix-only", action="store_true", help="only compute and cache the exact matrices"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--max-candidates", type=int, default=MAX_CANDIDATES, help="representatives per search"
    )
    parser.add_argument(
        "--no-confirm-merges",
        action="store_true",
        help="merge two classes on a linking trial alone, without testing their founders",
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.matrix_only:
        for dataset in args.datasets:
            exact_matrix(load_trajectories(dataset))
        return
    document = {"machine": machine(), "results": []}
    for dataset in args.datasets:
        document["results"].append(
            benchmark_dataset(
                dataset,
                tuple(args.sizes),
                args.epsilon,
                args.direct_all_pairs,
                args.max_candidates,
                not args.no_confirm_merges,
            )
        )
    document["machine"]["load_average_end"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1))
    _logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
