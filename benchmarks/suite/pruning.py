"""Pruning: epochs spent and test accuracy reached, per pruner, at equal trial budgets.

For each study seed and data set, one search per pruner runs the same number of trials
with ``TPESampler(seed)`` and a fixed number of epochs per trial (epochs are the
resource that pruning saves, so they are not searched here). Every pruner runs at its
Optuna defaults, which is what a user gets by naming it: ``NopPruner`` (no pruning),
``MedianPruner()``, ``TopologicalPruner()`` (``MedianPruner()`` plus the homotopy-class
rule at its defaults), ``HyperbandPruner(max_resource=epochs)``,
``SuccessiveHalvingPruner()`` and ``WilcoxonPruner()``. ``WilcoxonPruner`` is designed
for per-instance evaluations. Here its steps are epochs, as for a user who reports
once per epoch.

Every search trains inside ``topselect.track``. Only the ``TopologicalPruner`` search
assigns homotopy classes (waypoints in a temporary local store), because the other
pruners never read them.

Per search: epochs trained (one per reported intermediate value), the test accuracy of
the best completed trial by validation accuracy (the trial a user would deploy), and
how many trials each rule pruned.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.suite import _stats
from benchmarks.suite._training import DATASETS, load_workload, suggest_params, train_trial

__all__ = ["PRUNERS", "render", "run"]

_logger = logging.getLogger(__name__)

#: Pruners compared, in table order.
PRUNERS = ("none", "median", "topological", "hyperband", "successive_halving", "wilcoxon")


def make_pruner(name: str, epochs: int) -> Any:
    """Return the pruner called ``name`` at its defaults (Hyperband gets ``max_resource``)."""
    import optuna

    import topselect

    pruners = optuna.pruners
    factories: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
        "none": pruners.NopPruner,
        "median": pruners.MedianPruner,
        "topological": topselect.TopologicalPruner,
        "hyperband": lambda: pruners.HyperbandPruner(max_resource=epochs),
        "successive_halving": pruners.SuccessiveHalvingPruner,
        "wilcoxon": pruners.WilcoxonPruner,
    }
    return factories[name]()


def _search(
    dataset: str, seed: int, pruner_name: str, trials: int, epochs: int, quick: bool
) -> dict[str, Any]:
    import optuna

    from topselect.homotopy import LocalWaypointStore
    from topselect.search import TrackerConfig

    workload = load_workload(dataset, seed, mnist1d_samples=1000 if quick else 4000)
    classes = pruner_name == "topological"
    config = TrackerConfig(
        seed=seed,
        grid_size=11 if quick else 31,
        classes=classes,
        baselines=False,
        trajectory_slice=False,
    )
    study = optuna.create_study(
        # HyperbandPruner assigns brackets from a hash of the study name, so a generated
        # name would make its decisions differ between reruns.
        study_name=f"pruning-{dataset}-{seed}-{pruner_name}",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=make_pruner(pruner_name, epochs),
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="topselect-bench-") as directory:
        store = LocalWaypointStore(directory) if classes else None

        def objective(trial: optuna.Trial) -> float:
            params = suggest_params(trial, epoch_choices=None)
            return train_trial(
                trial,
                workload,
                params,
                epochs=epochs,
                seed=seed,
                config=config,
                waypoint_store=store,
            )

        study.optimize(objective, n_trials=trials)
    return _search_summary(study, dataset, seed, pruner_name, time.perf_counter() - started)


def _search_summary(
    study: Any, dataset: str, seed: int, pruner_name: str, seconds: float
) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    reasons = [str(t.user_attrs.get("topselect.prune_reason") or "") for t in pruned]
    best = max(completed, key=lambda t: (t.value, -t.number)) if completed else None
    return {
        "dataset": dataset,
        "seed": seed,
        "pruner": pruner_name,
        "trials": len(trials),
        "completed": len(completed),
        "pruned": len(pruned),
        "pruned_by_class_rule": sum(r.startswith("class ") for r in reasons),
        "fitted_trials": sum(bool(t.user_attrs.get("topselect.fitted")) for t in trials),
        "trials_with_class": sum(
            t.user_attrs.get("topselect.class_id") is not None for t in trials
        ),
        "epochs": sum(len(t.intermediate_values) for t in trials),
        "best_trial": None if best is None else best.number,
        "best_val_accuracy": None if best is None else 100 * best.value,
        "best_test_accuracy": None if best is None else best.user_attrs["test_accuracy"],
        "max_test_accuracy": max((t.user_attrs["test_accuracy"] for t in completed), default=None),
        "seconds": round(seconds, 1),
    }


def _compare(searches: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Summarize each pruner against no pruning and against MedianPruner, pair by pair."""
    by_key = {(s["dataset"], s["seed"], s["pruner"]): s for s in searches}
    keys = sorted({(s["dataset"], s["seed"]) for s in searches})
    summary: dict[str, Any] = {}
    for pruner in PRUNERS:
        entry: dict[str, Any] = {}
        for reference in ("none", "median"):
            ratios, differences = [], []
            for dataset, study_seed in keys:
                mine = by_key[(dataset, study_seed, pruner)]
                other = by_key[(dataset, study_seed, reference)]
                ratios.append(mine["epochs"] / other["epochs"])
                if mine["best_test_accuracy"] is None or other["best_test_accuracy"] is None:
                    differences.append(math.nan)
                else:
                    differences.append(mine["best_test_accuracy"] - other["best_test_accuracy"])
            entry[f"vs_{reference}"] = {
                "epochs_saved": 1 - float(np.mean(ratios)),
                "accuracy_difference": float(np.nanmean(differences)),
                "accuracy_difference_ci95": list(
                    _stats.bootstrap_interval(differences, seed=seed)
                ),
                "pairs": len(keys),
            }
        mine_all = [by_key[(d, s, pruner)] for d, s in keys]
        entry["epochs_total"] = sum(s["epochs"] for s in mine_all)
        entry["pruned_total"] = sum(s["pruned"] for s in mine_all)
        entry["pruned_by_class_rule"] = sum(s["pruned_by_class_rule"] for s in mine_all)
        entry["completed_total"] = sum(s["completed"] for s in mine_all)
        entry["mean_best_test_accuracy"] = float(
            np.nanmean(
                [
                    np.nan if s["best_test_accuracy"] is None else s["best_test_accuracy"]
                    for s in mine_all
                ]
            )
        )
        entry["seconds_total"] = round(sum(s["seconds"] for s in mine_all), 1)
        summary[pruner] = entry
    return summary


def _goals(summary: dict[str, Any]) -> dict[str, Any]:
    topo = summary["topological"]
    return {
        "epochs_saved_vs_none": topo["vs_none"]["epochs_saved"],
        "saves_at_least_40_percent": topo["vs_none"]["epochs_saved"] >= 0.40,
        # Adding 0.0 turns a loss of -0.0 into 0.0 for the report.
        "accuracy_loss_vs_none": -topo["vs_none"]["accuracy_difference"] + 0.0,
        "loses_at_most_0.2_points": topo["vs_none"]["accuracy_difference"] >= -0.2,
        "at_least_as_good_as_median": (
            topo["vs_median"]["accuracy_difference"] >= 0
            and topo["vs_median"]["epochs_saved"] >= 0
        ),
    }


def run(*, quick: bool, seed: int) -> dict[str, Any]:
    """Run every pruner's search for every study seed and data set, then compare them."""
    seeds = list(range(seed, seed + (1 if quick else 2)))
    trials = 4 if quick else 20
    epochs = 3 if quick else 12
    searches = []
    for study_seed in seeds:
        for dataset in DATASETS:
            for pruner in PRUNERS:
                _logger.info("pruning: %s, seed %d, %s", pruner, study_seed, dataset)
                searches.append(_search(dataset, study_seed, pruner, trials, epochs, quick))
    summary = _compare(searches, seed)
    return {
        "settings": {
            "study_seeds": seeds,
            "trials_per_search": trials,
            "epochs_per_trial": epochs,
            "pruners": list(PRUNERS),
        },
        "summary": summary,
        "goals": _goals(summary),
        "searches": searches,
    }


def render(result: dict[str, Any]) -> str:
    """Return the Markdown body: one row per pruner, then the goals."""
    from benchmarks.suite._table import fmt, table

    settings = result["settings"]
    rows = []
    for pruner, s in result["summary"].items():
        none, median = s["vs_none"], s["vs_median"]
        rows.append(
            [
                pruner,
                s["epochs_total"],
                f"{100 * none['epochs_saved']:.1f}%",
                s["pruned_total"],
                s["pruned_by_class_rule"],
                s["mean_best_test_accuracy"],
                f"{fmt(none['accuracy_difference'])} [{fmt(none['accuracy_difference_ci95'][0])}, "
                f"{fmt(none['accuracy_difference_ci95'][1])}]",
                f"{100 * median['epochs_saved']:.1f}%",
                median["accuracy_difference"],
                s["seconds_total"],
            ]
        )
    goals = result["goals"]
    return "\n\n".join(
        [
            f"{len(settings['study_seeds'])} study seeds x 2 data sets, "
            f"{settings['trials_per_search']} trials per search, "
            f"{settings['epochs_per_trial']} epochs per trial, `TPESampler(seed)`; every "
            "pruner at its defaults. Epochs saved is 1 minus the mean per-pair ratio of "
            "epochs trained; accuracy is the test accuracy (points) of the best completed "
            "trial by validation accuracy, with the mean paired difference and its 95% "
            "bootstrap interval.",
            table(
                [
                    "pruner",
                    "epochs",
                    "saved vs none",
                    "pruned trials",
                    "by class rule",
                    "mean test acc",
                    "acc diff vs none [95% CI]",
                    "saved vs median",
                    "acc diff vs median",
                    "seconds",
                ],
                rows,
            ),
            "Goals for TopologicalPruner: saves >= 40% of epochs vs none "
            f"{fmt(goals['saves_at_least_40_percent'])} "
            f"({100 * goals['epochs_saved_vs_none']:.1f}%); loses <= 0.2 points vs none "
            f"{fmt(goals['loses_at_most_0.2_points'])} "
            f"({fmt(goals['accuracy_loss_vs_none'] + 0.0)} points lost); at least as good as "
            f"MedianPruner (no fewer epochs saved, no lower accuracy) "
            f"{fmt(goals['at_least_as_good_as_median'])}.",
        ]
    )
