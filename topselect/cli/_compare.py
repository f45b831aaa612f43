"""``topselect compare``: rank the trials of a study already recorded in MLflow."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import click

from topselect.cli import UserError

FORMATS = ("table", "json", "csv")


def _check_sqlite_store(path: Path) -> None:
    """Raise UserError unless ``path`` is an MLflow sqlite store, without writing to it.

    MlflowClient creates its tables in any sqlite file it opens, so a read command must
    look first, through a read-only connection.
    """
    if not path.exists():
        raise UserError(
            f"no MLflow store at {path}; run in the directory that contains mlflow.db or pass "
            "--tracking-uri."
        )
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as error:
        raise UserError(f"{path} is not an MLflow tracking store: {error}.") from None
    if not {"experiments", "runs", "alembic_version"} <= tables:
        raise UserError(
            f"{path} is not an MLflow tracking store (it has no MLflow tables). Check "
            "--tracking-uri."
        )


def compare_text(
    experiment: str, tracking_uri: str | None, parent_run: str | None, fmt: str
) -> tuple[str, list[str]]:
    """Return the rendered ranking of an experiment's study and notes for stderr.

    Raises:
        UserError: For an unknown experiment or a store that does not exist.
        click.ClickException: When reading the store failed.
    """
    from topselect.cli._render import render
    from topselect.exceptions import ExperimentNotFoundError, TrackingError
    from topselect.search import rank_records
    from topselect.tracking import load_study_runs, resolve_tracking_uri
    from topselect.tracking._uri import sqlite_path

    uri = resolve_tracking_uri(tracking_uri)
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite_store(path)
    from mlflow import MlflowClient

    try:
        runs = load_study_runs(MlflowClient(tracking_uri=uri), experiment, parent_run)
    except ExperimentNotFoundError as error:
        raise UserError(str(error)) from None
    except TrackingError as error:
        raise UserError(str(error)) from None
    except Exception as error:  # Any MLflow or network failure: one line, no traceback.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise click.ClickException(
            f"could not read {uri}: {type(error).__name__}: {first_line}"
        ) from None
    ranking = rank_records(
        runs.records, maximize=runs.maximize, weight=runs.weight, score=runs.score
    )
    header = {
        "experiment": runs.experiment_name,
        "parent_run_id": runs.parent_run_id,
        "direction": "maximize" if runs.maximize else "minimize",
        "weight": runs.weight,
        "score": runs.score,
    }
    notes = []
    if runs.other_parents:
        notes.append(
            f"The experiment holds {len(runs.other_parents) + 1} study runs; showing the "
            f"newest ({runs.parent_run_id}). Choose another with --parent-run."
        )
    return render(ranking, fmt, score=runs.score, header=header), notes


@click.command()
@click.argument("experiment")
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db].",
)
@click.option("--parent-run", default=None, help="Study run id, when the experiment has several.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format; json follows the schema in docs/cli.md.",
)
def compare(experiment: str, tracking_uri: str | None, parent_run: str | None, fmt: str) -> None:
    """Rank the trials of EXPERIMENT (a study logged by topselect; name or id).

    Completed trials come first, by topology-adjusted value, then pruned trials by their
    adjusted last intermediate value, then failed or running trials, unranked.
    """
    from topselect.tracking._writer import bound_http_retries

    # A read command fails fast instead of retrying: no retries, 15 s per request.
    bound_http_retries(max_retries=0, timeout_seconds=15)
    text, notes = compare_text(experiment, tracking_uri, parent_run, fmt)
    for note in notes:
        click.echo(note, err=True)
    click.echo(text)
