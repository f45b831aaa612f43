"""Reading topselect's runs back from MLflow for ``compare``."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Any

from topselect.exceptions import ExperimentNotFoundError, TrackingError
from topselect.search._ranking import DEFAULT_SCORE, DEFAULT_WEIGHT, TrialRecord

__all__ = ["StudyRuns", "find_experiment", "load_study_runs"]

_logger = logging.getLogger(__name__)

_PAGE = 1000


@dataclass(frozen=True)
class StudyRuns:
    """One study's runs as read from MLflow.

    Attributes:
        experiment_name: Name of the MLflow experiment.
        parent_run_id: The study's parent run.
        maximize: Whether the study maximized its objective.
        weight: Topology weight the study ranked with.
        score: Flatness score the study ranked with.
        records: One record per trial run.
        other_parents: Ids of other study runs in the experiment, newest first.
    """

    experiment_name: str
    parent_run_id: str
    maximize: bool
    weight: float
    score: str
    records: list[TrialRecord]
    other_parents: list[str]


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
    by_lower = {name.lower(): name for name in names}
    near = difflib.get_close_matches(name_or_id.lower(), list(by_lower), n=3, cutoff=0.5)
    if near:
        hint = f" Did you mean {', '.join(repr(by_lower[n]) for n in near)}?"
    elif names:
        shown = ", ".join(repr(n) for n in sorted(names)[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        hint = f" Experiments in this store: {shown}{more}."
    else:
        hint = " The store contains no experiments."
    raise ExperimentNotFoundError(f"experiment {name_or_id!r} not found.{hint}")


def _search_all(client, experiment_id: str, filter_string: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=_PAGE, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def load_study_runs(client, name_or_id: str, parent_run_id: str | None = None) -> StudyRuns:
    """Load the trial runs of one study in an experiment.

    The newest parent run is used unless ``parent_run_id`` is given. Filtering happens on
    the server (by tag), so experiments with many unrelated runs stay fast.

    Raises:
        ExperimentNotFoundError: For an unknown experiment.
        TrackingError: When the experiment contains no topselect study run, or
            ``parent_run_id`` is not one of them.
    """
    experiment = find_experiment(client, name_or_id)
    parents = _search_all(client, experiment.experiment_id, "tags.`topselect.role` = 'study'")
    parents.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    if not parents:
        raise TrackingError(
            f"experiment {experiment.name!r} contains no topselect study run; was it logged "
            "by topselect?"
        )
    ids = [p.info.run_id for p in parents]
    if parent_run_id is None:
        parent = parents[0]
    elif parent_run_id in ids:
        parent = parents[ids.index(parent_run_id)]
    else:
        raise TrackingError(
            f"run {parent_run_id!r} is not a study run of experiment {experiment.name!r}; "
            f"study runs: {', '.join(ids)}."
        )
    params = parent.data.params
    direction = parent.data.tags.get("topselect.direction", "minimize")
    if "/" in direction:
        raise TrackingError(
            f"study run {parent.info.run_id} of {experiment.name!r} has several objectives "
            f"({direction}); compare ranks single-objective studies only."
        )
    children = _search_all(
        client,
        experiment.experiment_id,
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    records = [_record(run) for run in children if run.data.tags.get("topselect.role") == "trial"]
    return StudyRuns(
        experiment_name=experiment.name,
        parent_run_id=parent.info.run_id,
        maximize=direction == "maximize",
        weight=float(params.get("topselect.weight", DEFAULT_WEIGHT)),
        score=params.get("topselect.score", DEFAULT_SCORE),
        records=records,
        other_parents=[i for i in ids if i != parent.info.run_id],
    )


def _record(run) -> TrialRecord:
    tags, metrics = run.data.tags, run.data.metrics
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
        number=int(tags.get("topselect.trial_number", run.info.run_name or -1)),
        state=tags.get("topselect.state", "RUNNING"),
        value=metrics.get("value"),
        last_intermediate=metrics.get("intermediate_value"),
        scores=scores,
        fitted=None if fitted_tag in (None, "", "None") else fitted_tag == "True",
        class_id=tags.get("topselect.class_id") or None,
        run_id=run.info.run_id,
        extra=extra,
    )
