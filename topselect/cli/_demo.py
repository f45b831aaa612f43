"""``topselect demo``: a real topology-aware search on handwritten digits."""

from __future__ import annotations

import logging
import sys
import time

import click


def _progress_callback(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, file=sys.stderr, unit="trial", dynamic_ncols=True)

    def on_trial_end(study, trial) -> None:
        states: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            states[t.state.name] = states.get(t.state.name, 0) + 1
        bar.set_postfix(
            complete=states.get("COMPLETE", 0), pruned=states.get("PRUNED", 0), refresh=False
        )
        bar.update(1)

    return bar, on_trial_end


def _describe(entry, label: str) -> str:
    record = entry.record
    test = record.extra.get("test_accuracy")
    test_text = f"{test:.4f}" if isinstance(test, float) else "-"
    return (
        f"{label} trial {record.number}: validation accuracy {record.value:.4f}, "
        f"adjusted {entry.adjusted_value:.4f}, held-out test accuracy {test_text} "
        f"({entry.evidence})"
    )


@click.command()
@click.option(
    "--trials",
    default=40,
    show_default=True,
    type=click.IntRange(min=1),
    help="Number of Optuna trials.",
)
@click.option(
    "--epochs",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Training epochs per trial.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the data split, sampler, initialization and probe set.",
)
@click.option(
    "--study-name",
    default="topselect-demo",
    show_default=True,
    help="Optuna study name, also the MLflow experiment name.",
)
@click.option(
    "--storage",
    default=None,
    help="Optuna storage URL, e.g. sqlite:///demo.db [default: in memory].",
)
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db].",
)
@click.option(
    "--grid-size",
    default=31,
    show_default=True,
    type=click.IntRange(min=3),
    help="Points per axis of each landscape slice (odd).",
)
def demo(trials: int, epochs: int, seed: int, study_name: str, storage: str | None,
         tracking_uri: str | None, grid_size: int) -> None:  # fmt: skip
    """Search small MLPs on scikit-learn's handwritten digits with topselect.

    Uses TopologicalSampler (TPE) and TopologicalPruner (median rule plus the class rule),
    logs every trial to MLflow, then prints the best trials by validation accuracy and by
    topselect's ranking with their held-out test accuracy, and the ranking table of
    ``topselect.rank_trials``.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    from topselect.cli import UserError
    from topselect.cli._render import render
    from topselect.demo import DemoSettings, run_demo
    from topselect.exceptions import InvalidInputError, TrackingError
    from topselect.search import DEFAULT_SCORE
    from topselect.tracking._uri import default_tracking_uri

    if grid_size % 2 == 0:
        raise UserError(f"--grid-size must be odd, but got {grid_size}. Try {grid_size + 1}.")
    uri = tracking_uri or default_tracking_uri()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    click.echo(
        f"Searching {trials} trials of MLPs on handwritten digits; MLflow store: {uri}", err=True
    )
    bar, on_trial_end = _progress_callback(trials)
    started = time.perf_counter()
    try:
        settings = DemoSettings(
            trials=trials,
            seed=seed,
            epochs=epochs,
            study_name=study_name,
            storage=storage,
            tracking_uri=uri,
            grid_size=grid_size,
        )
        result = run_demo(settings, on_trial_end=on_trial_end)
    except InvalidInputError as error:
        raise UserError(str(error)) from None
    except TrackingError as error:
        raise click.ClickException(str(error)) from None
    except (ImportError, RuntimeError, ValueError, OSError, SQLAlchemyError) as error:
        # Storage URLs fail in many ways (missing driver, unreachable server, bad URL,
        # a scheme SQLAlchemy has no dialect for).
        if logging.getLogger("topselect").level <= logging.DEBUG:
            raise
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise click.ClickException(
            f"the search failed: {type(error).__name__}: {first_line} (run with -vv for the "
            "traceback)"
        ) from None
    finally:
        bar.close()
    ranked = [e for e in result.ranking if e.rank is not None and e.record.state == "COMPLETE"]
    held = len(result.study.trials)
    resumed = f" (the study now holds {held})" if held != result.new_trials else ""
    click.echo(
        f"\nRan {result.new_trials} trials in {time.perf_counter() - started:.0f} s{resumed}."
    )
    if ranked:
        by_validation = max(ranked, key=lambda e: (e.record.value, -e.record.number))
        click.echo(_describe(by_validation, "Best by validation:"))
        click.echo(_describe(ranked[0], "Best by topselect: "))
    else:
        click.echo("No trial completed, so there is no best trial to report.")
    click.echo(f"\nOpen the results in the MLflow UI:\n  mlflow ui --backend-store-uri {uri}")
    # rank_trials reads the Optuna study; `topselect compare` prints the same table from
    # the MLflow runs.
    click.echo(f"\nRanking (topselect.rank_trials; also `topselect compare {study_name}`):")
    score = getattr(result.study.sampler, "score", DEFAULT_SCORE)
    click.echo(render(result.ranking, "table", score=score, header={}))
