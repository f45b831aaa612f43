"""Reading topselect's runs and artifacts back from MLflow, for ``compare`` and ``show``.

Runs are selected on the server (by parent run, tags, run ids and a filter string) and
read in pages, so experiments with many unrelated runs stay fast. Artifacts are read
only through :mod:`topselect.tracking._artifacts`, which never unpickles anything.
"""

from __future__ import annotations

import difflib
import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from topselect.exceptions import ExperimentNotFoundError, TrackingError
from topselect.search._ranking import DEFAULT_SCORE, DEFAULT_WEIGHT, TrialRecord
from topselect.tracking._artifacts import (
    ArtifactError,
    diagram_from_json,
    read_json_artifact,
    read_npz_artifact,
)

__all__ = [
    "ArtifactProblem",
    "RunRow",
    "RunSelection",
    "StudyRuns",
    "fetch_artifacts",
    "find_experiment",
    "load_class_table",
    "load_diagrams",
    "load_probe_outputs",
    "load_runs",
    "load_study_runs",
    "near_matches",
    "run_row",
]

_logger = logging.getLogger(__name__)

#: Runs per ``search_runs`` page.
DEFAULT_PAGE_SIZE = 1000
# Run ids per ``attributes.run_id IN (...)`` filter, to keep filter strings short.
_IDS_PER_FILTER = 100
_DOWNLOAD_THREADS = 8

T = TypeVar("T")


@dataclass(frozen=True)
class RunSelection:
    """Selection of the runs to read. The parts combine with AND.

    Attributes:
        experiment: Experiment name or id. Without run ids or filters, the trial runs of
            its newest (or ``parent_run_id``) study run are read.
        parent_run_id: Study run whose trial runs are read.
        run_ids: Runs to read, by id.
        tags: ``(key, value)`` pairs each run must carry.
        filter_string: An extra MLflow filter string (AND only, as MLflow supports).
    """

    experiment: str | None = None
    parent_run_id: str | None = None
    run_ids: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    filter_string: str | None = None


@dataclass(frozen=True)
class RunRow:
    """Fields of one run that ``compare`` shows besides its ranking record.

    Attributes:
        run_id: MLflow run id.
        run_name: MLflow run name.
        experiment_id: Experiment of the run.
        status: MLflow status (``RUNNING``, ``FINISHED``, ``FAILED``, ``KILLED``).
        duration: End minus start time in seconds; ``None`` while the run is open.
        params: The run's params without topselect's settings.
        parent_run_id: Value of the ``mlflow.parentRunId`` tag.
        artifact_uri: Root of the run's artifacts.
        topselect: Whether the run is a topselect trial run.
    """

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    duration: float | None
    params: dict[str, str]
    parent_run_id: str | None
    artifact_uri: str
    topselect: bool


@dataclass(frozen=True)
class ArtifactProblem:
    """An artifact that could not be used, and why."""

    run_id: str
    trial: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"run {self.run_id} (trial {self.trial}): {self.message}"


@dataclass(frozen=True)
class StudyRuns:
    """Runs read from MLflow for one comparison.

    Attributes:
        experiment_name: Name of the experiment (``None`` when runs span several).
        parent_run_id: The study run the settings came from, if any.
        maximize: Whether the study maximized its objective.
        weight: Topology weight the study ranked with.
        score: Flatness score the study ranked with.
        records: One ranking record per selected run.
        other_parents: Ids of other study runs in the experiment, newest first.
        rows: Run metadata by run id.
        notes: Messages for the user about the selection.
    """

    experiment_name: str | None
    parent_run_id: str | None
    maximize: bool
    weight: float
    score: str
    records: list[TrialRecord]
    other_parents: list[str]
    rows: dict[str, RunRow] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- experiments -------------------------------------------------------------------------


def find_experiment(client, name_or_id: str):
    """Return the experiment named ``name_or_id`` (or with that id).

    Raises:
        ExperimentNotFoundError: When none matches; the message lists near matches.
    """
    experiment = client.get_experiment_by_name(name_or_id)
    if experiment is None and name_or_id.isdigit():
        try:
            experiment = client.get_experiment(name_or_id)
        except Exception:  # MLflow raises its own error type for a missing id.
            experiment = None
    if experiment is not None:
        return experiment
    names = [e.name for e in client.search_experiments()]
    raise ExperimentNotFoundError(
        f"experiment {name_or_id!r} not found.{near_matches(name_or_id, names, 'Experiments')}"
    )


def near_matches(name: str, candidates: Sequence[str], kind: str) -> str:
    """Return a hint naming up to three close matches of ``name`` (case-insensitive).

    Without close matches the hint lists the first five candidates, or states that there are none.
    """
    by_lower = {candidate.lower(): candidate for candidate in candidates}
    near = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
    if near:
        return f" Did you mean {', '.join(repr(by_lower[n]) for n in near)}?"
    if candidates:
        shown = ", ".join(repr(c) for c in sorted(candidates)[:5])
        more = f" and {len(candidates) - 5} more" if len(candidates) > 5 else ""
        return f" {kind}: {shown}{more}."
    return f" There are no {kind.lower()}."


# -- runs ----------------------------------------------------------------------------------


def _search_all(
    client, experiment_ids: list[str], filter_string: str, page_size: int = DEFAULT_PAGE_SIZE
) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=filter_string, max_results=page_size, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _and(*parts: str | None) -> str:
    return " AND ".join(p for p in parts if p)


def _tag_filter(tags: Sequence[tuple[str, str]]) -> str:
    return _and(*(f"tags.`{key}` = '{_quote(value)}'" for key, value in tags))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def load_study_runs(
    client,
    name_or_id: str,
    parent_run_id: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> StudyRuns:
    """Load the trial runs of one study in an experiment.

    The newest study run is used unless ``parent_run_id`` is given.

    Raises:
        ExperimentNotFoundError: For an unknown experiment.
        TrackingError: When ``parent_run_id`` is not a study run of the experiment, or
            the study has several objectives.
    """
    selection = RunSelection(experiment=name_or_id, parent_run_id=parent_run_id)
    return load_runs(client, selection, page_size=page_size)


def load_runs(client, selection: RunSelection, page_size: int = DEFAULT_PAGE_SIZE) -> StudyRuns:
    """Load the runs a selection names, with the ranking settings of their study.

    With an experiment and no run ids or filters, these are the trial runs of its newest
    study run (or ``parent_run_id``). An experiment without study runs yields its runs,
    marked as runs without topselect data. With run ids, tags or a filter string, those
    runs are read, from the experiment when one is given, else from every experiment.

    Raises:
        ExperimentNotFoundError: For an unknown experiment.
        TrackingError: For an unknown run id or study run, an empty selection, runs of
            studies with different directions, or a multi-objective study.
    """
    experiment = None
    if selection.experiment is not None:
        experiment = find_experiment(client, selection.experiment)
    filters = _and(_tag_filter(selection.tags), selection.filter_string)
    if selection.run_ids:
        runs = _runs_by_id(client, experiment, selection.run_ids, filters, page_size)
        return _assemble(client, runs, experiment, None, [], [])
    if experiment is None:
        if not filters:
            raise TrackingError(
                "nothing selects runs: give an experiment, --run-id, --tag or --filter."
            )
        ids = [e.experiment_id for e in _all_experiments(client)]
        runs = _search_all(client, ids, filters, page_size)
        return _assemble(client, runs, None, None, [], [])
    return _load_experiment(client, experiment, selection, filters, page_size)


def _load_experiment(
    client, experiment, selection: RunSelection, filters: str, page_size: int
) -> StudyRuns:
    parents = _search_all(
        client, [experiment.experiment_id], "tags.`topselect.role` = 'study'", page_size
    )
    parents.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    ids = [p.info.run_id for p in parents]
    if not parents:
        runs = _search_all(client, [experiment.experiment_id], filters, page_size)
        note = (
            f"Experiment {experiment.name!r} contains no topselect study run; its "
            f"{len(runs)} runs are listed without topselect data."
        )
        return _assemble(client, runs, experiment, None, [], [note])
    if selection.parent_run_id is None:
        parent = parents[0]
    elif selection.parent_run_id in ids:
        parent = parents[ids.index(selection.parent_run_id)]
    else:
        raise TrackingError(
            f"run {selection.parent_run_id!r} is not a study run of experiment "
            f"{experiment.name!r}; study runs: {', '.join(ids)}."
        )
    children_filter = _and(f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", filters)
    runs = _search_all(client, [experiment.experiment_id], children_filter, page_size)
    notes = []
    if len(parents) > 1 and selection.parent_run_id is None:
        notes.append(
            f"The experiment contains {len(parents)} study runs; showing the newest "
            f"({parent.info.run_id}). Choose another with --parent-run."
        )
    others = [i for i in ids if i != parent.info.run_id]
    return _assemble(client, runs, experiment, parent, others, notes)


def _all_experiments(client) -> list[Any]:
    experiments: list[Any] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        experiments.extend(page)
        token = page.token
        if not token:
            return experiments


def _runs_by_id(
    client, experiment, run_ids: Sequence[str], filters: str, page_size: int
) -> list[Any]:
    """Read runs by id; a filter may drop some of them, but every id must exist."""
    wanted = list(dict.fromkeys(run_ids))
    if experiment is not None:
        runs = _search_ids(client, [experiment.experiment_id], wanted, "", page_size)
    else:
        runs = [run for run in _map_threads(lambda i: _get_run_or_none(client, i), wanted) if run]
    found = {run.info.run_id for run in runs}
    missing = [i for i in wanted if i not in found]
    if missing:
        where = f" in experiment {experiment.name!r}" if experiment is not None else ""
        raise TrackingError(f"run(s) not found{where}: {', '.join(missing)}.")
    if not filters:
        return runs
    experiment_ids = sorted({run.info.experiment_id for run in runs})
    return _search_ids(client, experiment_ids, wanted, filters, page_size)


def _search_ids(
    client, experiment_ids: list[str], run_ids: list[str], filters: str, page_size: int
) -> list[Any]:
    runs: list[Any] = []
    for start in range(0, len(run_ids), _IDS_PER_FILTER):
        listed = ", ".join(f"'{_quote(i)}'" for i in run_ids[start : start + _IDS_PER_FILTER])
        runs.extend(
            _search_all(
                client,
                experiment_ids,
                _and(f"attributes.run_id IN ({listed})", filters),
                page_size,
            )
        )
    return runs


def _get_run_or_none(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _assemble(
    client, runs: list[Any], experiment, parent, other_parents: list[str], notes: list[str]
) -> StudyRuns:
    runs = [run for run in runs if run.data.tags.get("topselect.role") != "study"]
    rows = {run.info.run_id: run_row(run) for run in runs}
    records = [_record(run, rows[run.info.run_id].topselect) for run in runs]
    if parent is None:
        parent = _parent_of(client, runs)
    settings = _settings(parent, experiment)
    foreign = sum(1 for row in rows.values() if not row.topselect)
    if foreign and not any("no topselect study run" in n for n in notes):
        notes.append(f"{foreign} of {len(runs)} runs carry no topselect data.")
    if not runs:
        notes.append("No run matches the selection.")
    experiment_name = (
        experiment.name if experiment is not None else _single_experiment(client, runs)
    )
    return StudyRuns(
        experiment_name=experiment_name,
        parent_run_id=parent.info.run_id if parent is not None else None,
        maximize=settings[0],
        weight=settings[1],
        score=settings[2],
        records=records,
        other_parents=other_parents,
        rows=rows,
        notes=notes,
    )


def _single_experiment(client, runs: list[Any]) -> str | None:
    ids = {run.info.experiment_id for run in runs}
    if len(ids) != 1:
        return None
    return client.get_experiment(ids.pop()).name


def _parent_of(client, runs: list[Any]):
    """Return the study run most of the selected trial runs belong to, if any.

    Raises:
        TrackingError: When the trial runs belong to studies with different directions.
    """
    counts = Counter(
        run.data.tags.get("mlflow.parentRunId")
        for run in runs
        if run.data.tags.get("topselect.role") == "trial"
        and run.data.tags.get("mlflow.parentRunId")
    )
    if not counts:
        return None
    parents = [p for p in _map_threads(lambda i: _get_run_or_none(client, i), list(counts)) if p]
    directions = {p.data.tags.get("topselect.direction", "minimize") for p in parents}
    if len(directions) > 1:
        raise TrackingError(
            f"the selected runs belong to studies with different directions "
            f"({', '.join(sorted(directions))}); select runs of one direction."
        )
    by_id = {p.info.run_id: p for p in parents}
    for parent_id, _ in counts.most_common():
        if parent_id in by_id:
            return by_id[parent_id]
    return None


def _settings(parent, experiment) -> tuple[bool, float, str]:
    if parent is None:
        return False, DEFAULT_WEIGHT, DEFAULT_SCORE
    params = parent.data.params
    direction = parent.data.tags.get("topselect.direction", "minimize")
    if "/" in direction:
        name = experiment.name if experiment is not None else parent.info.experiment_id
        raise TrackingError(
            f"study run {parent.info.run_id} of {name!r} has several objectives "
            f"({direction}); compare ranks single-objective studies only."
        )
    return (
        direction == "maximize",
        float(params.get("topselect.weight", DEFAULT_WEIGHT)),
        params.get("topselect.score", DEFAULT_SCORE),
    )


def run_row(run) -> RunRow:
    """Return the :class:`RunRow` of an MLflow run."""
    info, tags = run.info, run.data.tags
    duration = None
    if info.end_time and info.start_time:
        duration = (info.end_time - info.start_time) / 1000.0
    return RunRow(
        run_id=info.run_id,
        run_name=info.run_name or "",
        experiment_id=info.experiment_id,
        status=info.status,
        duration=duration,
        params={k: v for k, v in run.data.params.items() if not k.startswith("topselect.")},
        parent_run_id=tags.get("mlflow.parentRunId"),
        artifact_uri=info.artifact_uri,
        topselect=tags.get("topselect.role") == "trial",
    )


def _record(run, topselect: bool) -> TrialRecord:
    tags, metrics = run.data.tags, run.data.metrics
    number_text = tags.get("topselect.trial_number") or tags.get("number") or run.info.run_name
    number = int(number_text) if str(number_text or "").lstrip("-").isdigit() else -1
    if not topselect:
        return TrialRecord(
            number=number,
            state="NO_TOPSELECT_DATA",
            value=metrics.get("value"),
            run_id=run.info.run_id,
            extra={k: v for k, v in metrics.items() if k != "value"},
        )
    scores = {
        key.removeprefix("topselect."): value
        for key, value in metrics.items()
        if key.startswith("topselect.")
    }
    fitted_tag = tags.get("topselect.fitted")
    extra = {k: v for k, v in metrics.items() if not k.startswith("topselect.")}
    extra.pop("value", None)
    extra.pop("intermediate_value", None)
    return TrialRecord(
        number=number,
        state=tags.get("topselect.state", "RUNNING"),
        value=metrics.get("value"),
        last_intermediate=metrics.get("intermediate_value"),
        scores=scores,
        fitted=None if fitted_tag in (None, "", "None") else fitted_tag == "True",
        class_id=tags.get("topselect.class_id") or None,
        run_id=run.info.run_id,
        extra=extra,
    )


# -- artifacts -----------------------------------------------------------------------------


def _map_threads(function: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(_DOWNLOAD_THREADS, len(items))) as pool:
        return list(pool.map(function, items))


def fetch_artifacts(
    rows: Sequence[RunRow],
    path: str,
    parse: Callable[[Path, str], T],
    tracking_uri: str,
    trial_names: dict[str, str] | None = None,
) -> tuple[dict[str, T], list[ArtifactProblem]]:
    """Download one artifact of each run in parallel threads and parse it.

    Args:
        rows: The runs.
        path: Artifact path, e.g. ``"topselect/diagram.json"``.
        parse: Reads the downloaded file; gets the path and a label naming run and file,
            and raises :class:`ArtifactError` for a corrupt or foreign file.
        tracking_uri: Resolves ``mlflow-artifacts:`` URIs of a tracking server.
        trial_names: How messages name each run's trial, by run id.

    Returns:
        Parsed artifacts by run id, and one problem per run whose artifact was missing,
        unreadable, corrupt or foreign.
    """
    import mlflow

    names = trial_names or {}

    def one(row: RunRow) -> tuple[str, T | None, ArtifactProblem | None]:
        label = f"{path} of run {row.run_id}"
        trial = names.get(row.run_id, row.run_name)
        with tempfile.TemporaryDirectory(prefix="topselect-") as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{row.artifact_uri.rstrip('/')}/{path}",
                    dst_path=tmp,
                    tracking_uri=tracking_uri,
                )
            except Exception as error:  # MLflow raises many types for a missing file.
                message = f"{path} is missing or could not be downloaded ({_first_line(error)})"
                return row.run_id, None, ArtifactProblem(row.run_id, trial, path, message)
            try:
                return row.run_id, parse(Path(local), label), None
            except ArtifactError as error:
                return row.run_id, None, ArtifactProblem(row.run_id, trial, path, str(error))

    parsed: dict[str, T] = {}
    problems: list[ArtifactProblem] = []
    for run_id, value, problem in _map_threads(one, list(rows)):
        if problem is not None:
            problems.append(problem)
        elif value is not None:
            parsed[run_id] = value
    return parsed, problems


def _parse_diagram(path: Path, label: str) -> dict[str, list[tuple[float, float]]]:
    document = read_json_artifact(path, label=label)
    try:
        return diagram_from_json(document)
    except ArtifactError as error:
        raise ArtifactError(f"{label} is not a topselect diagram: {error}") from None


def load_diagrams(rows, tracking_uri: str, trial_names=None):
    """Read ``topselect/diagram.json`` of each run (see :func:`fetch_artifacts`)."""
    return fetch_artifacts(
        rows, "topselect/diagram.json", _parse_diagram, tracking_uri, trial_names
    )


def _parse_probe_outputs(path: Path, label: str):
    from topselect.exceptions import InvalidInputError
    from topselect.tracking._functional import PROBE_OUTPUTS_ARRAYS, decode_probe_outputs

    arrays = read_npz_artifact(path, label=label, required=PROBE_OUTPUTS_ARRAYS)
    try:
        return decode_probe_outputs(arrays)
    except InvalidInputError as error:
        raise ArtifactError(f"{label} is not valid probe outputs: {error}") from None


def load_probe_outputs(rows, tracking_uri: str, trial_names=None):
    """Read ``topselect/probe_outputs.npz`` of each run (see :func:`fetch_artifacts`)."""
    return fetch_artifacts(
        rows, "topselect/probe_outputs.npz", _parse_probe_outputs, tracking_uri, trial_names
    )


def load_class_table(client, parent_run_id: str, tracking_uri: str) -> list[dict[str, Any]] | None:
    """Return the rows of the study run's ``topselect/classes.json``, or ``None``.

    ``None`` when the study run has none (it is written when the study finishes) or the
    file is unreadable; an unreadable file is logged as a warning.
    """
    parent = client.get_run(parent_run_id)
    row = run_row(parent)

    def parse(path: Path, label: str) -> list[dict[str, Any]]:
        document = read_json_artifact(path, label=label)
        table = document.get("classes")
        if not isinstance(table, list) or not all(
            isinstance(r, dict) and isinstance(r.get("members"), list) for r in table
        ):
            raise ArtifactError(f"{label} has no list of classes with members.")
        return table

    parsed, problems = fetch_artifacts([row], "topselect/classes.json", parse, tracking_uri)
    for problem in problems:
        if "missing" not in problem.message:
            _logger.warning("%s", problem)
    return parsed.get(parent_run_id)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
