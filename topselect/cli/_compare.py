"""``topselect compare``: rank and compare trials already recorded in MLflow."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from topselect.cli import PARTIAL_EXIT_CODE, UserError, echo_notes, read_failure, timeout_option
from topselect.cli._render import FORMATS

if TYPE_CHECKING:
    from topselect.cli._render import Report
    from topselect.search import RankedTrial
    from topselect.tracking._reader import RunRow, StudyRuns

DISTANCE_METRICS = ("bottleneck", "wasserstein", "sliced")
_FIXED_SORT_KEYS = (
    "rank", "trial", "state", "value", "adjusted", "class", "fitted", "duration_s", "run",
)  # fmt: skip
# Metrics that topselect.transfer.log_transfer writes as ``topselect.transfer.<key>``,
# shown as these columns (fractions).
TRANSFER_COLUMNS = {
    "accuracy": "transfer_accuracy",
    "accuracy_ratio": "transfer_ratio",
    "time_saving": "transfer_saving",
}


def check_sqlite_store(path: Path) -> None:
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


def open_client(tracking_uri: str | None):
    """Return ``(uri, MlflowClient)`` for a read command, checking a sqlite store first."""
    from topselect.exceptions import TrackingError
    from topselect.tracking import resolve_tracking_uri
    from topselect.tracking._uri import mlflow_client, sqlite_path

    uri = resolve_tracking_uri(tracking_uri)
    path = sqlite_path(uri)
    if path is not None:
        check_sqlite_store(path)
    try:
        return uri, mlflow_client(uri)
    except TrackingError as error:
        raise UserError(str(error)) from None


@dataclass
class CompareOptions:
    """The options of one ``compare`` call, checked."""

    fmt: str = "table"
    sort: str | None = None
    distances: str | None = None
    dimensions: tuple[str, ...] = ("h0", "h1")
    max_points: int | None = 500
    equivalence: bool = False
    group_by: tuple[str, ...] = ()
    top: int = 25
    plot: Path | None = None
    agreement_threshold: float = 0.95
    cka_threshold: float = 0.9
    page_size: int = 1000
    notes: list[str] = field(default_factory=list)


def build_report(runs: StudyRuns, uri: str, client, options: CompareOptions) -> tuple[Report, Any]:
    """Rank the runs, compute the requested sections and return the report and diagrams.

    Raises:
        UserError: For an unknown sort column or grouping param.
    """
    from topselect.cli._render import Report
    from topselect.search import rank_records

    _apply_class_table(runs, client, uri)
    _add_transfer_columns(runs)
    ranking = rank_records(
        runs.records, maximize=runs.maximize, weight=runs.weight, score=runs.score
    )
    report = Report(
        header={
            "experiment": runs.experiment_name,
            "parent_run_id": runs.parent_run_id,
            "direction": "maximize" if runs.maximize else "minimize",
            "weight": runs.weight,
            "score": runs.score,
        },
        ranking=_sorted(ranking, options.sort, runs),
        score=runs.score,
        rows=runs.rows,
        notes=list(runs.notes) + options.notes,
    )
    report.classes = _classes(ranking, runs)
    chosen = _matrix_runs(ranking, options.top)
    labels = {e.record.run_id or "": _label(e) for e in ranking}
    diagrams: dict[str, Any] = {}
    if options.distances or options.plot:
        diagrams = _diagram_section(report, runs, chosen, labels, uri, options)
    if options.equivalence:
        _equivalence_section(report, runs, chosen, labels, uri, options)
    return report, diagrams


def _label(entry: RankedTrial) -> str:
    return (
        str(entry.record.number) if entry.record.number >= 0 else (entry.record.run_id or "")[:8]
    )


def _apply_class_table(runs: StudyRuns, client, uri: str) -> None:
    """Replace trial class tags by the study run's class table, which has merges applied."""
    import dataclasses

    from topselect.tracking._reader import load_class_table

    if runs.parent_run_id is None or not any(r.class_id for r in runs.records):
        return
    table = load_class_table(client, runs.parent_run_id, uri)
    if table is None:
        return
    merged = {int(n): str(row["class_id"]) for row in table for n in row["members"]}
    runs.records[:] = [
        dataclasses.replace(r, class_id=merged.get(r.number, r.class_id))
        if r.class_id is not None
        else r
        for r in runs.records
    ]


def _add_transfer_columns(runs: StudyRuns) -> None:
    """Copy transfer metrics into the extra columns under short names.

    A trial run keeps them among its scores as ``transfer.<key>``. Any other run lists
    every ``topselect.transfer.<key>`` metric as an extra column, and these are replaced
    by the short columns alone.
    """
    import dataclasses

    prefix = "topselect.transfer."
    updated = []
    for record in runs.records:
        extra = {k: v for k, v in record.extra.items() if not k.startswith(prefix)}
        for key, column in TRANSFER_COLUMNS.items():
            value = record.scores.get(f"transfer.{key}", record.extra.get(prefix + key))
            if value is not None:
                extra[column] = value
        updated.append(dataclasses.replace(record, extra=extra))
    runs.records[:] = updated


def _sorted(ranking: list[RankedTrial], sort: str | None, runs: StudyRuns) -> list[RankedTrial]:
    from topselect.cli._render import column_value

    if sort is None:
        return ranking
    descending = sort.startswith("-")
    key = sort.lstrip("-")
    known = set(_FIXED_SORT_KEYS) | {runs.score}
    for entry in ranking:
        known.update(entry.record.scores)
        known.update(k for k, v in entry.record.extra.items() if isinstance(v, int | float))
    if key not in known:
        from topselect.tracking._reader import near_matches

        raise UserError(
            f"--sort: unknown column {key!r}.{near_matches(key, sorted(known), 'Columns')}"
        )

    def value(entry: RankedTrial) -> Any:
        return column_value(entry, key, runs.score, runs.rows)

    present = [e for e in ranking if value(e) is not None]
    missing = [e for e in ranking if value(e) is None]
    present.sort(key=lambda e: _sort_key(value(e)), reverse=descending)
    return present + missing


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value))


def _classes(ranking: list[RankedTrial], runs: StudyRuns) -> list[dict[str, Any]] | None:
    from topselect.cli._analysis import class_summary

    rows = class_summary(ranking, maximize=runs.maximize, score=runs.score)
    return rows or None


def _matrix_runs(ranking: list[RankedTrial], top: int) -> list[RankedTrial]:
    """Completed topselect trials in rank order, the best ``top`` (all when 0)."""
    chosen = [e for e in ranking if e.record.state == "COMPLETE" and e.record.run_id]
    chosen.sort(key=lambda e: e.rank if e.rank is not None else 1 << 30)
    return chosen if top == 0 else chosen[:top]


def _diagram_section(
    report: Report,
    runs: StudyRuns,
    chosen: list[RankedTrial],
    labels: dict[str, str],
    uri: str,
    options: CompareOptions,
) -> dict[str, Any]:
    from topselect.cli._analysis import distance_matrices
    from topselect.tracking._reader import load_diagrams

    rows = [runs.rows[e.record.run_id or ""] for e in chosen]
    diagrams, problems = load_diagrams(rows, uri, labels)
    report.problems.extend(problems)
    order = [row.run_id for row in rows if row.run_id in diagrams]
    if len(order) >= 2:
        metric = options.distances or "sliced"
        report.distances = distance_matrices(
            diagrams,
            order,
            [labels[r] for r in order],
            metric,
            dimensions=options.dimensions,
            max_points=options.max_points,
        )
    elif options.distances:
        report.notes.append(f"Distances need two trials with diagram.json; {len(order)} had one.")
    return diagrams


def _equivalence_section(
    report: Report,
    runs: StudyRuns,
    chosen: list[RankedTrial],
    labels: dict[str, str],
    uri: str,
    options: CompareOptions,
) -> None:
    from topselect.cli._analysis import functional_equivalence
    from topselect.tracking._reader import load_probe_outputs

    rows = [runs.rows[e.record.run_id or ""] for e in chosen]
    outputs, problems = load_probe_outputs(rows, uri, labels)
    report.problems.extend(problems)
    order = [row.run_id for row in rows if row.run_id in outputs]
    groupings: dict[str, dict[str, str | None]] = {
        "class": {e.record.run_id or "": e.record.class_id for e in chosen}
    }
    for param in _group_params(runs, options):
        groupings[param] = {row.run_id: row.params.get(param) for row in rows}
    if len(order) < 2:
        report.notes.append(
            f"Functional equivalence needs two trials with probe_outputs.npz; {len(order)} "
            "had one."
        )
        return
    report.equivalence = functional_equivalence(
        outputs,
        order,
        [labels[r] for r in order],
        groupings,
        agreement_threshold=options.agreement_threshold,
        cka_threshold=options.cka_threshold,
    )


def _group_params(runs: StudyRuns, options: CompareOptions) -> list[str]:
    from topselect.tracking._reader import near_matches

    params = sorted({name for row in runs.rows.values() for name in row.params})
    if not options.group_by:
        return ["optimizer"] if "optimizer" in params else []
    for name in options.group_by:
        if name not in params:
            raise UserError(
                f"--group-by: no selected run has the param {name!r}."
                f"{near_matches(name, params, 'Params')}"
            )
    return list(options.group_by)


def _parse_tags(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    tags = []
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise UserError(f"--tag takes KEY=VALUE, but got {value!r}.")
        tags.append((key, text))
    return tuple(tags)


def _check_choices(fmt: str, options: CompareOptions) -> None:
    if fmt == "csv" and (options.distances or options.equivalence):
        raise UserError(
            "--format csv contains the ranking table only; use --format json, table or markdown "
            "with --distances or --equivalence."
        )
    if options.plot is not None and options.plot.suffix.lower() != ".png":
        raise UserError(
            f"--plot writes a PNG file, but got {str(options.plot)!r}; end it in .png."
        )


@click.command()
@click.argument("experiment", required=False)
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db].",
)
@click.option("--parent-run", default=None, help="Study run id, when the experiment has several.")
@click.option("--run-id", "run_ids", multiple=True, help="Compare this run (repeatable).")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keep runs with this tag (repeatable).",
)
@click.option(
    "--filter",
    "filter_string",
    default=None,
    help="Extra MLflow filter string, applied on the server.",
)
@click.option(
    "--sort",
    default=None,
    metavar="COLUMN",
    help="Order rows by a column (e.g. value, duration_s, a score); prefix - for descending, "
    "as --sort=-value [default: rank].",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Output format; json follows the schema in docs/cli.md.")  # fmt: skip
@click.option(
    "--distances",
    type=click.Choice(DISTANCE_METRICS),
    default=None,
    help="Print diagram distance matrices with this metric (sliced is the fast one).",
)
@click.option(
    "--dimension",
    type=click.Choice(["h0", "h1", "both"]),
    default="both",
    show_default=True,
    help="Homology dimension of the distance matrices.",
)
@click.option(
    "--max-points",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Finite bars kept per diagram for bottleneck and wasserstein (0: all).",
)
@click.option(
    "--equivalence", is_flag=True, help="Print prediction agreement and linear CKA between trials."
)
@click.option(
    "--group-by",
    multiple=True,
    metavar="PARAM",
    help="Summarize equivalence between groups of this param, besides classes "
    "[default: optimizer, when the runs have it].",
)
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=25,
    show_default=True,
    help="Completed trials, best first, in the matrices and the plot (0: all).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG figure: distance heatmap, diagram overlay, class spread, CKA.",
)
@click.option(
    "--page-size",
    type=click.IntRange(min=1, max=50000),
    default=1000,
    show_default=True,
    help="Runs per search request.",
)
@timeout_option
def compare(
    experiment: str | None,
    tracking_uri: str | None,
    parent_run: str | None,
    run_ids: tuple[str, ...],
    tags: tuple[str, ...],
    filter_string: str | None,
    sort: str | None,
    fmt: str,
    distances: str | None,
    dimension: str,
    max_points: int,
    equivalence: bool,
    group_by: tuple[str, ...],
    top: int,
    plot: Path | None,
    page_size: int,
    timeout: float,
) -> None:
    """Rank and compare the trials of EXPERIMENT (name or id), or of selected runs.

    Completed trials come first, by topology-adjusted value, then pruned trials by their
    adjusted last intermediate value, then failed or running trials and runs without
    topselect data, unranked. Exit codes: 0 success, 1 partial (runs without topselect
    data, or artifacts missing or unreadable; stderr names each) or the store could not
    be read, 2 usage error.
    """
    from topselect.tracking import RunSelection, load_runs

    if experiment is None and not (run_ids or tags or filter_string):
        raise UserError("give an EXPERIMENT, or select runs with --run-id, --tag or --filter.")
    if parent_run is not None and experiment is None:
        raise UserError("--parent-run needs the EXPERIMENT it belongs to.")
    options = CompareOptions(
        fmt=fmt, sort=sort, distances=distances,
        dimensions=("h0", "h1") if dimension == "both" else (dimension,),
        max_points=None if max_points == 0 else max_points, equivalence=equivalence,
        group_by=group_by, top=top, plot=plot, page_size=page_size,
    )  # fmt: skip
    _check_choices(fmt, options)
    selection = RunSelection(
        experiment=experiment,
        parent_run_id=parent_run,
        run_ids=run_ids,
        tags=_parse_tags(tags),
        filter_string=filter_string,
    )
    uri, client = open_client(tracking_uri)
    with read_failure(uri):
        runs = load_runs(client, selection, page_size=page_size)
        report, diagrams = build_report(runs, uri, client, options)
    _finish(report, diagrams, options)


def _finish(report: Report, diagrams: Any, options: CompareOptions) -> None:
    from topselect.cli._render import render_report

    if options.plot is not None:
        from topselect.cli._plots import save_compare_figure

        save_compare_figure(options.plot, report, diagrams)
        report.notes.append(f"Wrote the figure to {options.plot}.")
    text = render_report(report, options.fmt)
    echo_notes(report.notes, report.problems)
    click.echo(text)
    if report.problems or _foreign(report.rows):
        raise SystemExit(PARTIAL_EXIT_CODE)


def _foreign(rows: dict[str, RunRow] | Any) -> bool:
    return any(not row.topselect for row in rows.values())
