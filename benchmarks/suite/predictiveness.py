"""Predictiveness: how well each flatness score and each baseline ranks trained models.

Design. For each data set, ``bases`` base configurations are drawn from a seeded
generator over three levels per hyperparameter (two for the optimizer). Around each base,
every hyperparameter is varied over its levels with the others held fixed, giving up to
14 distinct models per base. Bases can share variants, so 5 bases give at most 70 models
(68 with seed 0). Every model trains inside
``topselect.track`` (no pruning), which stores the landscape scores, the scores of the
slice through the trajectory's plane and the three sharpness baselines.

Statistics, for all models and for fitted models (probe-set loss at most the tracker's
``fit_loss``) separately:

- Kendall tau-b of the measure against test accuracy and against the negative
  generalization gap (train minus test accuracy, in points). Each measure is first
  oriented by its expected sign (``ORIENTATION``), so a positive tau always means the
  measure ranks as expected.
- Granulated Kendall Psi (Jiang et al. 2020): tau within each group of models that
  differ in one hyperparameter only (3 or 2 models here), averaged per hyperparameter,
  then over hyperparameters. This is a sampled form of their full-grid design.
- R^2 of a least-squares line (squared Pearson r), the statistic arXiv 2510.04376
  reports (R^2 = 0.82 for total persistence on CIFAR-10).
- The same tau and R^2 with the train loss partialled out: measure and target are
  both replaced by their residuals after a least-squares fit on log10 of the
  training-set cross-entropy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.suite import _stats
from benchmarks.suite._training import DATASETS, load_workload, train_trial

__all__ = ["LEVELS", "ORIENTATION", "make_design", "render", "run"]

_logger = logging.getLogger(__name__)

#: Levels of each hyperparameter in the one-at-a-time design.
LEVELS: dict[str, tuple[Any, ...]] = {
    "lr": (3e-4, 3e-3, 3e-2),
    "batch_size": (16, 64, 128),
    "weight_decay": (1e-6, 1e-4, 1e-2),
    "width": (32, 64, 128),
    "depth": (1, 2, 3),
    "optimizer": ("adam", "sgd"),
    "epochs": (10, 30, 60),
}
QUICK_EPOCHS = (1, 2, 4)

#: Expected sign of each measure's relation to test accuracy: +1 when a larger value
#: should mean a better model. Total persistence counts as roughness (-1), an a-priori
#: choice, because arXiv 2510.04376 reports only R^2, which has no sign.
ORIENTATION: dict[str, int] = {
    "tp_h0": -1,
    "tp_h1": -1,
    "tp_h0_norm": -1,
    "tp_h1_norm": -1,
    "basin_area_0.01": 1,
    "basin_area_0.03": 1,
    "basin_area_0.1": 1,
    "basin_area_0.3": 1,
    "basin_area_1": 1,
    "basin_integral": 1,
    "plane.tp_h0": -1,
    "plane.basin_area_0.1": 1,
    "plane.basin_integral": 1,
    "hessian_trace": -1,
    "hessian_top_eigenvalue": -1,
    "asam_sharpness": -1,
    "weight_norm": -1,
    "val_loss": -1,
    "train_loss": -1,
}
#: Measures computed by topselect's persistence analysis (candidates for the primary score).
TOPOLOGY_MEASURES = tuple(m for m in ORIENTATION if m.startswith(("tp_", "basin", "plane.")))
#: Fitted models each data set needs before the fitted subset decides the primary score.
MIN_FITTED = 10
#: The sharpness baselines the goal compares against.
SHARPNESS_BASELINES = ("hessian_trace", "asam_sharpness")


@dataclass(frozen=True)
class Design:
    """Configurations of the one-at-a-time design and the groups that share all but one."""

    configs: list[dict[str, Any]]
    groups: dict[str, list[list[int]]]


def make_design(bases: int, seed: int, levels: dict[str, tuple[Any, ...]]) -> Design:
    """Draw ``bases`` base configurations and vary one hyperparameter at a time around each."""
    rng = np.random.default_rng(seed)
    configs: list[dict[str, Any]] = []
    index: dict[tuple[Any, ...], int] = {}
    groups: dict[str, list[list[int]]] = {name: [] for name in levels}

    def add(config: dict[str, Any]) -> int:
        key = tuple(config[name] for name in levels)
        if key not in index:
            index[key] = len(configs)
            configs.append(config)
        return index[key]

    for _ in range(bases):
        base = {name: values[int(rng.integers(len(values)))] for name, values in levels.items()}
        for name, values in levels.items():
            groups[name].append([add({**base, name: value}) for value in values])
    return Design(configs, groups)


def _train_all(dataset: str, design: Design, seed: int, quick: bool) -> list[dict[str, Any]]:
    import optuna

    from topselect.search import TrackerConfig

    workload = load_workload(dataset, seed, mnist1d_samples=1000 if quick else 4000)
    config = TrackerConfig(grid_size=11 if quick else 31, seed=seed, classes=False)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna.pruners.NopPruner(),
    )
    for params in design.configs:
        study.enqueue_trial(params)

    levels = _levels(quick)

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial.suggest_categorical(name, values) for name, values in levels.items()}
        return train_trial(
            trial, workload, params, epochs=params["epochs"], seed=seed, config=config
        )

    study.optimize(objective, n_trials=len(design.configs))
    return [_model_row(t) for t in study.get_trials(deepcopy=False)]


def _levels(quick: bool) -> dict[str, tuple[Any, ...]]:
    """Return the design's levels; the quick size trains for fewer epochs."""
    return {**LEVELS, "epochs": QUICK_EPOCHS} if quick else dict(LEVELS)


def _model_row(trial: Any) -> dict[str, Any]:
    attrs = trial.user_attrs
    scores = attrs.get("topselect.scores") or {}
    plane = attrs.get("topselect.plane_scores") or {}
    baselines = attrs.get("topselect.baselines") or {}
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "params": dict(trial.params),
        "fitted": bool(attrs.get("topselect.fitted")),
        "probe_train_loss": attrs.get("topselect.train_loss"),
        "val_accuracy": None if trial.value is None else 100 * trial.value,
    }
    for key in ("test_accuracy", "train_accuracy", "train_loss_full", "val_loss", "weight_norm"):
        row[key] = attrs.get(key)
    measures: dict[str, float | None] = {}
    for name in ORIENTATION:
        if name.startswith("plane."):
            measures[name] = plane.get(name.removeprefix("plane."))
        elif name in baselines:
            measures[name] = baselines[name]
        elif name in scores:
            measures[name] = scores[name]
        elif name == "train_loss":
            measures[name] = attrs.get("train_loss_full")
        else:
            measures[name] = attrs.get(name)
    row["measures"] = measures
    return row


def _column(rows: list[dict[str, Any]], get: Callable[[dict[str, Any]], Any]) -> np.ndarray:
    return np.array([math.nan if get(r) is None else float(get(r)) for r in rows])


def _measure_getter(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row["measures"][name]


def _statistics(
    rows: list[dict[str, Any]], groups: dict[str, list[list[int]]], subset: str
) -> dict[str, Any]:
    members = [r for r in rows if subset == "all" or r["fitted"]]
    in_subset = {r["number"] for r in members}
    test = _column(members, lambda r: r["test_accuracy"])
    gap = _column(members, lambda r: r["train_accuracy"]) - test
    log_loss = np.log10(np.maximum(_column(members, lambda r: r["train_loss_full"]), 1e-12))
    by_number = {r["number"]: r for r in rows}
    out: dict[str, Any] = {"n": len(members), "measures": {}}
    targets = {"test_accuracy": test, "neg_gap": -gap}
    for name, sign in ORIENTATION.items():
        values = sign * _column(members, _measure_getter(name))
        entry: dict[str, Any] = {}
        for target_name, target in targets.items():
            entry[f"tau_{target_name}"] = _stats.kendall_tau(values, target)
            entry[f"r2_{target_name}"] = _stats.r_squared(values, target)
            residual_x = _stats.residuals(values, log_loss)
            residual_y = _stats.residuals(target, log_loss)
            entry[f"partial_tau_{target_name}"] = _stats.kendall_tau(residual_x, residual_y)
            entry[f"partial_r2_{target_name}"] = _stats.r_squared(residual_x, residual_y)
            entry[f"psi_{target_name}"], entry[f"psi_terms_{target_name}"] = _psi(
                name, sign, target_name, groups, by_number, in_subset
            )
        out["measures"][name] = entry
    return out


def _psi(
    name: str,
    sign: int,
    target_name: str,
    groups: dict[str, list[list[int]]],
    by_number: dict[int, dict[str, Any]],
    in_subset: set[int],
) -> tuple[float, Any]:
    def target(row: dict[str, Any]) -> float:
        test = row["test_accuracy"]
        if test is None:
            return math.nan
        if target_name == "test_accuracy":
            return float(test)
        train = row["train_accuracy"]
        return math.nan if train is None else float(test) - float(train)

    def measure(row: dict[str, Any]) -> float:
        value = row["measures"][name]
        return math.nan if value is None else sign * float(value)

    grouped = {
        hyper: [
            (
                [measure(by_number[i]) for i in group if i in in_subset],
                [target(by_number[i]) for i in group if i in in_subset],
            )
            for group in hyper_groups
        ]
        for hyper, hyper_groups in groups.items()
    }
    return _stats.granulated_psi(grouped)


def _choose_primary(per_dataset: dict[str, Any]) -> dict[str, Any]:
    """Pick the topology measure whose worst-data-set tau against test accuracy is highest.

    The sampler adjusts fitted trials only, so the tau on fitted models decides when
    every data set has at least ``MIN_FITTED`` of them. Otherwise the tau on all models
    with the train loss partialled out decides, because raw tau over all models mostly
    measures how well a model fitted.
    """
    enough = all(stats["fitted"]["n"] >= MIN_FITTED for stats in per_dataset.values())
    subset, key = (
        ("fitted", "tau_test_accuracy") if enough else ("all", "partial_tau_test_accuracy")
    )

    def worst_tau(name: str) -> float:
        taus = [stats[subset]["measures"][name][key] for stats in per_dataset.values()]
        return min((t if math.isfinite(t) else -math.inf) for t in taus)

    ranked = sorted(TOPOLOGY_MEASURES, key=worst_tau, reverse=True)
    return {
        "primary": ranked[0],
        "subset": subset,
        "statistic": key,
        "worst_tau": worst_tau(ranked[0]),
        "order": ranked,
    }


def _goals(per_dataset: dict[str, Any], primary: str) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    for dataset, stats in per_dataset.items():
        for subset in ("all", "fitted"):
            measures = stats[subset]["measures"]
            tau = measures[primary]["tau_test_accuracy"]
            goals[f"{dataset}/{subset}"] = {
                "r2": measures[primary]["r2_test_accuracy"],
                "r2_at_least_0.82": measures[primary]["r2_test_accuracy"] >= 0.82,
                "tau": tau,
                "tau_above_baselines": all(
                    tau > measures[b]["tau_test_accuracy"] for b in SHARPNESS_BASELINES
                ),
            }
    return goals


def run(*, quick: bool, seed: int) -> dict[str, Any]:
    """Train the design on both data sets and compute every statistic.

    Returns:
        The JSON-safe result: settings, every model's row, the statistics per data set
        and subset, the primary score chosen and the goals.
    """
    bases = 1 if quick else 5
    design = make_design(bases, seed, _levels(quick))
    models: dict[str, list[dict[str, Any]]] = {}
    statistics: dict[str, Any] = {}
    for dataset in DATASETS:
        _logger.info("predictiveness: training %d models on %s", len(design.configs), dataset)
        rows = _train_all(dataset, design, seed, quick)
        models[dataset] = rows
        statistics[dataset] = {
            subset: _statistics(rows, design.groups, subset) for subset in ("all", "fitted")
        }
    choice = _choose_primary(statistics)
    return {
        "settings": {
            "bases": bases,
            "models_per_dataset": len(design.configs),
            "levels": {k: list(v) for k, v in _levels(quick).items()},
            "grid_size": 11 if quick else 31,
            "mnist1d_samples": 1000 if quick else 4000,
            "partial_control": "log10 training-set cross-entropy",
        },
        "orientation": ORIENTATION,
        "statistics": statistics,
        "primary": choice,
        "goals": _goals(statistics, choice["primary"]),
        "models": models,
        "groups": design.groups,
    }


#: Measures shown in the Markdown tables; the JSON result has every one of ORIENTATION.
SHOWN = (
    "tp_h0",
    "tp_h1",
    "tp_h0_norm",
    "basin_area_0.01",
    "basin_area_0.1",
    "basin_area_1",
    "basin_integral",
    "plane.tp_h0",
    "plane.basin_area_0.1",
    "plane.basin_integral",
    "hessian_trace",
    "hessian_top_eigenvalue",
    "asam_sharpness",
    "weight_norm",
    "val_loss",
    "train_loss",
)


def render(result: dict[str, Any]) -> str:
    """Return the Markdown body: one table per data set and subset, then the decision."""
    from benchmarks.suite._table import fmt, table

    settings = result["settings"]
    levels = "; ".join(
        f"{name} {' / '.join(str(v) for v in values)}"
        for name, values in settings["levels"].items()
    )
    parts = [
        f"{settings['models_per_dataset']} models per data set ({settings['bases']} base "
        f"configurations, one hyperparameter varied at a time over the levels: "
        f"{levels}); {settings['grid_size']} x {settings['grid_size']} slices. "
        "tau is Kendall tau-b of the measure, oriented so that positive means ranked as "
        "expected (sign in parentheses), against test accuracy (acc) and against the "
        "negative generalization gap (gap). Psi is granulated Kendall Psi. R^2 is the "
        "squared Pearson r. The partial columns are taken on residuals after a "
        "least-squares fit on log10 of the training cross-entropy."
    ]
    for dataset, stats in result["statistics"].items():
        for subset in ("all", "fitted"):
            block = stats[subset]
            rows = []
            for name in SHOWN:
                m = block["measures"][name]
                rows.append(
                    [
                        f"{name} ({'+' if result['orientation'][name] > 0 else '-'})",
                        m["tau_test_accuracy"],
                        m["psi_test_accuracy"],
                        m["r2_test_accuracy"],
                        m["tau_neg_gap"],
                        m["psi_neg_gap"],
                        m["r2_neg_gap"],
                        m["partial_tau_test_accuracy"],
                        m["partial_r2_test_accuracy"],
                    ]
                )
            parts.append(f"**{dataset}, {subset} models (n = {block['n']})**")
            parts.append(
                table(
                    [
                        "measure",
                        "tau acc",
                        "Psi acc",
                        "R^2 acc",
                        "tau gap",
                        "Psi gap",
                        "R^2 gap",
                        "partial tau acc",
                        "partial R^2 acc",
                    ],
                    rows,
                )
            )
    primary = result["primary"]
    basis = (
        "tau on fitted models"
        if primary["subset"] == "fitted"
        else f"partial tau on all models, because a data set has fewer than {MIN_FITTED} "
        "fitted models"
    )
    parts.append(
        f"Primary score by this run's rule (the persistence score with the highest "
        f"worst-data-set {basis}): `{primary['primary']}` (worst tau "
        f"{fmt(primary['worst_tau'])})."
    )
    parts.append(_best_by_subset(result))
    goal_rows = [
        [key, g["r2"], g["r2_at_least_0.82"], g["tau"], g["tau_above_baselines"]]
        for key, g in result["goals"].items()
    ]
    parts.append(
        table(
            [
                "data set / subset",
                "R^2 of primary",
                "R^2 >= 0.82",
                "tau of primary",
                "tau above Hessian trace and SAM",
            ],
            goal_rows,
        )
    )
    return "\n\n".join(parts)


def _best_by_subset(result: dict[str, Any]) -> str:
    """Return one line per data set and subset naming the best persistence score by tau."""
    from benchmarks.suite._table import fmt

    lines = ["Best persistence score by tau against test accuracy, beside the baselines:"]
    for dataset, stats in result["statistics"].items():
        for subset in ("all", "fitted"):
            measures = stats[subset]["measures"]

            def tau(name: str, measures: dict[str, Any] = measures) -> float:
                value = measures[name]["tau_test_accuracy"]
                return value if value is not None and math.isfinite(value) else -math.inf

            best = max(TOPOLOGY_MEASURES, key=tau)
            if tau(best) == -math.inf:
                lines.append(f"- {dataset}, {subset}: no persistence score has a defined tau.")
                continue
            baselines = ", ".join(
                f"{name} {fmt(measures[name]['tau_test_accuracy'])}"
                for name in ("hessian_trace", "hessian_top_eigenvalue", "asam_sharpness")
            )
            lines.append(
                f"- {dataset}, {subset} (n = {stats[subset]['n']}): `{best}` "
                f"{fmt(tau(best))}, against {baselines}."
            )
    return "\n".join(lines)
