"""Selection: does topselect's top-ranked trial generalize better than Optuna's best?

For each study seed and data set, two searches run with the same TPE seed, the same
trial budget and no pruning:

- ``optuna``: a plain ``TPESampler``; the pick is ``study.best_trial`` (best validation
  accuracy, first trial on ties).
- ``topselect``: ``TopologicalSampler`` around the same TPE with weight
  ``WEIGHT`` (0.01) and the default score; the pick is
  ``topselect.rank_trials(study)[0]``.

Both searches train inside ``topselect.track``, so both store the flatness scores. The
first five trials (TPE's random start-up) are identical in both, and the searches diverge
only where the adjusted values change TPE's suggestions. The statistic is the test
accuracy of the topselect pick minus that of the Optuna pick, in points: its mean over
all seed and data set pairs with a 95% percentile bootstrap interval, and the win rate
(ties reported apart). A second, cheaper comparison reranks each plain search's trials
at several weights, which isolates the ranking from the sampler.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from benchmarks.suite import _stats
from benchmarks.suite._training import DATASETS, load_workload, suggest_params, train_trial

__all__ = ["render", "run"]

_logger = logging.getLogger(__name__)

#: Weight of the topselect searches, in objective units (accuracy as a fraction): at most
#: one accuracy point for a fitted trial. The library's default weight is 0, which would
#: make both searches identical.
WEIGHT = 0.01
#: Weights (objective units, here accuracy as a fraction) at which the plain searches
#: are reranked after the fact; 0.01 is one accuracy point per unit of basin area.
RERANK_WEIGHTS = (0.01, 0.03, 0.1, 0.3)
#: Random start-up trials of TPE, fewer than its default 10 so that most of a short
#: search is guided by the (adjusted) values.
STARTUP_TRIALS = 5


def _search(
    workload: Any, seed: int, trials: int, epoch_choices: tuple[int, ...], weight: float | None
) -> Any:
    import optuna

    import topselect
    from topselect.search import TrackerConfig

    base = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    sampler = base if weight is None else topselect.TopologicalSampler(base, weight=weight)
    study = optuna.create_study(
        direction="maximize", sampler=sampler, pruner=optuna.pruners.NopPruner()
    )
    config = TrackerConfig(seed=seed, classes=False, baselines=False, trajectory_slice=False)

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, epoch_choices)
        return train_trial(
            trial, workload, params, epochs=params["epochs"], seed=seed, config=config
        )

    study.optimize(objective, n_trials=trials)
    return study


def _test_accuracy(trial: Any) -> float:
    return float(trial.user_attrs["test_accuracy"])


def _pick_by_rank(study: Any, weight: float) -> Any:
    import topselect

    ranking = topselect.rank_trials(study, weight=weight)
    return ranking[0].record.number


def _pair(dataset: str, seed: int, trials: int, epochs: tuple[int, ...]) -> dict[str, Any]:
    workload = load_workload(dataset, seed)
    plain = _search(workload, seed, trials, epochs, weight=None)
    adjusted = _search(workload, seed, trials, epochs, weight=WEIGHT)
    optuna_pick = plain.best_trial
    topselect_number = _pick_by_rank(adjusted, WEIGHT)
    topselect_pick = adjusted.trials[topselect_number]
    reranked = {}
    for weight in RERANK_WEIGHTS:
        number = _pick_by_rank(plain, weight)
        reranked[str(weight)] = {
            "trial": number,
            "test_accuracy": _test_accuracy(plain.trials[number]),
        }
    return {
        "dataset": dataset,
        "seed": seed,
        "optuna": {
            "trial": optuna_pick.number,
            "val_accuracy": 100 * optuna_pick.value,
            "test_accuracy": _test_accuracy(optuna_pick),
            "fitted_trials": sum(bool(t.user_attrs.get("topselect.fitted")) for t in plain.trials),
        },
        "topselect": {
            "trial": topselect_number,
            "val_accuracy": topselect_pick.value,
            "test_accuracy": _test_accuracy(topselect_pick),
            "best_val_in_search": adjusted.best_value,
            "fitted_trials": sum(
                bool(t.user_attrs.get("topselect.fitted")) for t in adjusted.trials
            ),
        },
        "difference": _test_accuracy(topselect_pick) - _test_accuracy(optuna_pick),
        "reranked_plain": reranked,
    }


def _summary(differences: list[float], seed: int) -> dict[str, Any]:
    values = np.asarray(differences, dtype=float)
    low, high = _stats.bootstrap_interval(values, seed=seed)
    return {
        "n": len(values),
        "mean": float(values.mean()) if len(values) else math.nan,
        "ci95": [low, high],
        "wins": int((values > 0).sum()),
        "ties": int((values == 0).sum()),
        "losses": int((values < 0).sum()),
        "win_rate": float((values > 0).mean()) if len(values) else math.nan,
        "win_rate_excluding_ties": (
            float((values > 0).sum() / max((values != 0).sum(), 1)) if len(values) else math.nan
        ),
    }


def run(*, quick: bool, seed: int) -> dict[str, Any]:
    """Run both searches for every study seed and data set and summarize the differences."""
    from topselect.search import DEFAULT_SCORE

    seeds = list(range(seed, seed + (1 if quick else 10)))
    trials = 3 if quick else 15
    epochs = (1, 2) if quick else (5, 10, 20)
    pairs = []
    for study_seed in seeds:
        for dataset in DATASETS:
            _logger.info("selection: seed %d on %s", study_seed, dataset)
            pairs.append(_pair(dataset, study_seed, trials, epochs))
    differences = [p["difference"] for p in pairs]
    rerank = {
        str(w): _summary(
            [
                p["reranked_plain"][str(w)]["test_accuracy"] - p["optuna"]["test_accuracy"]
                for p in pairs
            ],
            seed,
        )
        for w in RERANK_WEIGHTS
    }
    by_dataset = {
        d: _summary([p["difference"] for p in pairs if p["dataset"] == d], seed) for d in DATASETS
    }
    summary = _summary(differences, seed)
    return {
        "settings": {
            "study_seeds": seeds,
            "trials_per_search": trials,
            "epoch_choices": list(epochs),
            "startup_trials": STARTUP_TRIALS,
            "weight": WEIGHT,
            "score": DEFAULT_SCORE,
            "bootstrap_resamples": 10_000,
        },
        "summary": summary,
        "by_dataset": by_dataset,
        "reranked_plain": rerank,
        "goal": {
            "mean_above_0": summary["mean"] > 0,
            "win_rate_above_half": summary["win_rate"] > 0.5,
        },
        "pairs": pairs,
    }


def render(result: dict[str, Any]) -> str:
    """Return the Markdown body: the paired differences, per data set and reranked."""
    from benchmarks.suite._table import fmt, table

    settings = result["settings"]

    def row(label: str, s: dict[str, Any]) -> list[Any]:
        return [
            label,
            s["n"],
            s["mean"],
            f"[{fmt(s['ci95'][0])}, {fmt(s['ci95'][1])}]",
            f"{s['wins']} / {s['ties']} / {s['losses']}",
            s["win_rate"],
        ]

    header = [
        "comparison",
        "pairs",
        "mean diff (points)",
        "95% CI",
        "wins / ties / losses",
        "win rate",
    ]
    rows = [row("sampler + ranking, both data sets", result["summary"])]
    rows += [row(f"sampler + ranking, {d}", s) for d, s in result["by_dataset"].items()]
    rows += [row(f"ranking only, weight {w}", s) for w, s in result["reranked_plain"].items()]
    goal = result["goal"]
    return "\n\n".join(
        [
            f"{len(settings['study_seeds'])} study seeds x 2 data sets, "
            f"{settings['trials_per_search']} "
            f"trials per search (TPE with {settings['startup_trials']} random start-up trials), "
            f"epochs from {settings['epoch_choices']}, no pruning. "
            f"topselect: `TopologicalSampler(TPESampler(seed), weight={settings['weight']})` "
            f"with score `{settings['score']}`, pick = `rank_trials(study)[0]`. Optuna: "
            f"`TPESampler(seed)`, pick = `study.best_trial`. Difference = test accuracy of "
            "the topselect pick minus the Optuna pick, in points; 95% percentile "
            'bootstrap interval of the mean. "Ranking only" reranks the plain search\'s '
            "trials at other weights.",
            table(header, rows),
            f"Goal (mean difference > 0 and win rate > 50%): mean > 0 "
            f"{fmt(goal['mean_above_0'])}, win rate > 50% {fmt(goal['win_rate_above_half'])}.",
        ]
    )
