"""Cost and agreement of representative-based homotopy classes against all-pairs classes.

The cached trajectories (``homotopy_trajectories.py``) are placed in trial order, once
per setting, and every setting is measured in the same process:

- all-pairs: ``ClassRegistry`` in ``"all_pairs"`` mode, what the tracker's all-pairs mode
  runs. Its classes are exact single linkage (connected components of "barrier <=
  epsilon" among fitted runs), found by union-find: a new run is tested against earlier
  fitted runs until it is witnessed against one member of each component it links, so
  pairs inside a component it already joined are never tested.
- fast mode: ``ClassRegistry`` in ``"representatives"`` mode, once per ``--setting``.
  Each run is placed on its prefixes at every waypoint fraction from ``warmup`` up to
  (not including) 1, as a running trial is, then, when fitted, on its full trajectory.

Placement is incremental, so the state after the first N runs is the state a study of N
runs reaches. Counts, wall times and classes are read at every N of ``--sizes`` during
one pass. It reports pair tests against N (N - 1) / 2 (prefix placements included, and
final placements alone), segments evaluated, wall time, and the adjusted Rand index
(ARI) of each setting's classes against the all-pairs classes over the fitted runs. When
the exact barrier matrix of ``--matrix-only`` is cached, the all-pairs classes are also
checked against its single linkage, and ARI against its complete linkage is added.
Results go to ``benchmarks/results/homotopy_scaling.json``.

Usage: ``python benchmarks/homotopy_scaling.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
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
)

RESULTS = Path(__file__).resolve().parent / "results"
#: Probe-set loss up to which a run counts as fitted (the tracker's default is 0.1).
FIT_LOSS = {"digits": 0.1, "mnist1d": 0.1}
EPSILON = 0.05
SIZES = (25, 50, 100, 200)

_logger = logging.getLogger("homotopy_scaling")


@dataclass(frozen=True)
class Setting:
    """Options of the representative mode that one measured pass uses."""

    name: str
    max_candidates: int
    prefix_candidates: int
    confirm_merges: bool
    warmup: float = 0.5


#: Settings measured side by side. Names give the final and prefix candidates, and
#: "star" (merges confirmed) or "chain" (merges on a linking run alone). The first is
#: the library's default; "star-3-prefix-3" was the default before it.
SETTINGS = {
    s.name: s
    for s in (
        Setting("chain-5-prefix-1", 5, 1, False),
        Setting("chain-10-prefix-1", 10, 1, False),
        Setting("chain-10-prefix-1-warmup-0.75", 10, 1, False, 0.75),
        Setting("chain-10-prefix-10", 10, 10, False),
        Setting("star-3-prefix-3", 3, 3, True),
    )
}


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


def place_runs(
    trajectories: TrajectorySet,
    sizes: tuple[int, ...],
    epsilon: float,
    setting: Setting | None,
    *,
    waypoint_dtype: str = "float32",
) -> dict[int, dict]:
    """Place runs in order and read the cost and classes at every N of ``sizes``.

    ``setting=None`` runs the all-pairs mode, which has no prefix placements.
    """
    tester = make_tester(trajectories, epsilon)
    architecture = architecture_signature(trajectories.model())
    if setting is None:
        registry = ClassRegistry({architecture: tester}, mode="all_pairs")
    else:
        registry = ClassRegistry(
            {architecture: tester},
            max_candidates=setting.max_candidates,
            prefix_candidates=setting.prefix_candidates,
            confirm_merges=setting.confirm_merges,
            waypoint_dtype=waypoint_dtype,  # type: ignore[arg-type]
        )
    fitted = fitted_mask(trajectories, max(sizes))
    prefix_pairs = prefix_evaluations = 0
    snapshots: dict[int, dict] = {}
    started = time.perf_counter()
    for number, run in enumerate(trajectories.runs[: max(sizes)]):
        previous = None
        for last in sorted(run.waypoints):
            if setting is None or not setting.warmup <= last < 1.0:
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
        n = number + 1
        if n in sizes:
            labels = registry.labels()
            snapshots[n] = {
                "seconds": time.perf_counter() - started,
                "pair_tests": tester.pair_tests,
                "barrier_evaluations": tester.barrier_evaluations,
                "final_pair_tests": tester.pair_tests - prefix_pairs,
                "final_barrier_evaluations": tester.barrier_evaluations - prefix_evaluations,
                "classes": len({c for c in labels.values() if c is not None}),
                "representatives": len(registry.representatives),
                "merges": len(registry.merges),
                "labels": [labels[i] for i in range(n)],
            }
    return snapshots


def fitted_labels(snapshot: dict, index: np.ndarray) -> list[str]:
    labels = [snapshot["labels"][i] for i in index]
    if any(label is None for label in labels):
        raise RuntimeError("a fitted trajectory has no class")
    return labels


def matrix_check(trajectories: TrajectorySet, n: int, epsilon: float, all_pairs: dict) -> dict:
    """Compare with the cached exact matrix, when there is one (see ``--matrix-only``)."""
    path = CACHE / f"{trajectories.dataset}-exact.npz"
    if not path.exists():
        return {}
    matrix = exact_matrix(trajectories)
    keep = np.flatnonzero(matrix["index"] < n)
    barriers = PairwiseBarriers(matrix["barriers"][np.ix_(keep, keep)], epsilon, True, 0, 0)
    single = all_pairs_classes(barriers, epsilon, linkage="single")
    complete = all_pairs_classes(barriers, epsilon, linkage="complete")
    labels = fitted_labels(all_pairs, matrix["index"][keep])
    return {
        "matrix_single_ari": float(adjusted_rand_score(single, labels)),
        "matrix_complete": complete.tolist(),
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
    settings: list[Setting],
    *,
    float16: bool = False,
    timing: bool = False,
) -> dict:
    trajectories = load_trajectories(dataset, max(sizes))
    result: dict = {
        "dataset": dataset,
        "n_parameters": int(trajectories.runs[0].waypoints[0.0].numel()),
        "fit_loss": FIT_LOSS[dataset],
        "epsilon": epsilon,
        "settings": [asdict(s) for s in settings],
        "sizes": [],
    }
    if timing:
        result["strategy_timing"] = strategy_timing(trajectories)
    all_pairs = place_runs(trajectories, sizes, epsilon, None)
    _logger.info("%s all-pairs: %s", dataset, _brief(all_pairs[max(sizes)]))
    fast = {}
    for setting in settings:
        fast[setting.name] = place_runs(trajectories, sizes, epsilon, setting)
        _logger.info("%s %s: %s", dataset, setting.name, _brief(fast[setting.name][max(sizes)]))
    half = None
    if float16:
        half = place_runs(
            trajectories, (max(sizes),), epsilon, settings[0], waypoint_dtype="float16"
        )
    for n in sizes:
        index = np.flatnonzero(fitted_mask(trajectories, n))
        n_pairs = n * (n - 1) // 2
        reference = fitted_labels(all_pairs[n], index)
        check = matrix_check(trajectories, n, epsilon, all_pairs[n])
        entry: dict = {
            "n": n,
            "n_pairs": n_pairs,
            "fitted": int(len(index)),
            "fitted_pairs": int(len(index) * (len(index) - 1) // 2),
            "all_pairs": {
                **all_pairs[n],
                "fraction_of_pairs": all_pairs[n]["pair_tests"] / n_pairs,
            },
            **{k: v for k, v in check.items() if k != "matrix_complete"},
            "settings": {},
        }
        for name, snapshots in fast.items():
            snapshot = snapshots[n]
            labels = fitted_labels(snapshot, index)
            entry["settings"][name] = {
                **snapshot,
                "fraction_of_pairs": snapshot["pair_tests"] / n_pairs,
                "final_fraction_of_pairs": snapshot["final_pair_tests"] / n_pairs,
                "seconds_over_all_pairs": snapshot["seconds"] / all_pairs[n]["seconds"],
                "ari": float(adjusted_rand_score(reference, labels)),
            }
            if "matrix_complete" in check:
                entry["settings"][name]["ari_complete"] = float(
                    adjusted_rand_score(check["matrix_complete"], labels)
                )
        if half is not None and n == max(sizes):
            first = settings[0].name
            entry["float16"] = {
                "setting": first,
                "pair_tests": half[n]["pair_tests"],
                "classes": half[n]["classes"],
                "ari_vs_float32": float(
                    adjusted_rand_score(
                        fitted_labels(fast[first][n], index), fitted_labels(half[n], index)
                    )
                ),
            }
        result["sizes"].append(entry)
        for name, measured in entry["settings"].items():
            _logger.info(
                "%s N=%d %s: %.1f%% of pairs (final %.1f%%), ARI %.3f; all-pairs %.1f%%",
                dataset,
                n,
                name,
                100 * measured["fraction_of_pairs"],
                100 * measured["final_fraction_of_pairs"],
                measured["ari"],
                100 * entry["all_pairs"]["fraction_of_pairs"],
            )
    return result


def _brief(snapshot: dict) -> dict:
    return {k: snapshot[k] for k in ("seconds", "pair_tests", "classes", "merges")}


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
        "--settings",
        nargs="+",
        choices=sorted(SETTINGS),
        default=list(SETTINGS),
        help="representative-mode settings to measure, the first also in float16",
    )
    parser.add_argument(
        "--matrix-only",
        action="store_true",
        help="only compute and cache the exact barrier matrices (slow: about 20 min each)",
    )
    parser.add_argument(
        "--float16", action="store_true", help="also run the first setting with float16 waypoints"
    )
    parser.add_argument(
        "--strategy-timing", action="store_true", help="also time the loop and vmap barriers"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.matrix_only:
        for dataset in args.datasets:
            exact_matrix(load_trajectories(dataset))
        return
    settings = [SETTINGS[name] for name in args.settings]
    document = {"machine": machine(), "results": []}
    for dataset in args.datasets:
        document["results"].append(
            benchmark_dataset(
                dataset,
                tuple(sorted(args.sizes)),
                args.epsilon,
                settings,
                float16=args.float16,
                timing=args.strategy_timing,
            )
        )
    document["machine"]["load_average_end"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1))
    _logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
