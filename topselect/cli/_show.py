"""``topselect show RUN_ID``: one run's topselect data."""

from __future__ import annotations

import json
import math
from typing import Any

import click

from topselect.cli import PARTIAL_EXIT_CODE, UserError, echo_notes, read_failure, timeout_option

_SHOW_SCHEMA_VERSION = 1


def _summary_of_diagram(diagram: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, bars in diagram.items():
        finite = [d - b for b, d in bars if math.isfinite(d)]
        out[key] = {
            "bars": len(bars),
            "essential_bars": len(bars) - len(finite),
            "total_persistence": sum(finite),
        }
    return out


def _show_document(client, run_id: str, uri: str) -> tuple[dict[str, Any], list[Any]]:
    from mlflow.exceptions import MlflowException

    from topselect.tracking._reader import load_diagrams, load_probe_outputs, run_row

    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise UserError(f"run {run_id!r} not found at {uri}.") from None
        raise
    row = run_row(run)
    tags = run.data.tags
    listed = client.list_artifacts(run_id, "topselect")
    names = {info.path for info in listed}
    problems: list[Any] = []
    document: dict[str, Any] = {
        "schema_version": _SHOW_SCHEMA_VERSION,
        "run_id": run_id,
        "run_name": row.run_name,
        "experiment": client.get_experiment(row.experiment_id).name,
        "status": row.status,
        "duration_s": row.duration,
        "parent_run_id": row.parent_run_id,
        "role": tags.get("topselect.role"),
        "state": tags.get("topselect.state"),
        "class_id": tags.get("topselect.class_id") or None,
        "fitted": tags.get("topselect.fitted"),
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": {k: v for k, v in tags.items() if k.startswith("topselect.")},
        "artifacts": [
            {"path": info.path, "bytes": info.file_size} for info in listed if not info.is_dir
        ],
        "diagram": None,
        "probe_outputs": None,
    }
    if "topselect/diagram.json" in names:
        diagrams, found = load_diagrams([row], uri)
        problems.extend(found)
        if run_id in diagrams:
            document["diagram"] = _summary_of_diagram(diagrams[run_id])
    if "topselect/probe_outputs.npz" in names:
        outputs, found = load_probe_outputs([row], uri)
        problems.extend(found)
        if run_id in outputs:
            o = outputs[run_id]
            document["probe_outputs"] = {
                "examples": int(o.features.shape[0]),
                "feature_columns": int(o.features.shape[1]),
                "feature_dim": o.feature_dim,
                "feature_layer": o.feature_layer,
                "kept_variance": o.kept_variance,
                "probe_fingerprint": o.probe_fingerprint,
            }
    return document, problems


def _text(document: dict[str, Any]) -> str:
    from topselect.cli._render import aligned_table

    fields = [
        "run_id", "run_name", "experiment", "status", "duration_s", "parent_run_id", "role",
        "state", "class_id", "fitted",
    ]  # fmt: skip
    sections = [aligned_table(["field", "value"], [[f, document[f]] for f in fields])]
    own = sorted(document["params"].items())
    if own:
        sections.append("Params\n" + aligned_table(["param", "value"], [list(p) for p in own]))
    metrics = sorted(document["metrics"].items())
    if metrics:
        sections.append(
            "Metrics\n" + aligned_table(["metric", "value"], [list(m) for m in metrics])
        )
    artifacts = [[a["path"], a["bytes"]] for a in document["artifacts"]]
    if artifacts:
        sections.append("Artifacts\n" + aligned_table(["path", "bytes"], artifacts))
    if document["diagram"]:
        rows = [
            [key, d["bars"], d["essential_bars"], d["total_persistence"]]
            for key, d in document["diagram"].items()
        ]
        columns = ["dimension", "bars", "essential_bars", "total_persistence"]
        sections.append("Persistence diagram\n" + aligned_table(columns, rows))
    if document["probe_outputs"]:
        items = sorted(document["probe_outputs"].items())
        sections.append(
            "Probe outputs\n" + aligned_table(["field", "value"], [list(i) for i in items])
        )
    return "\n\n".join(sections)


@click.command()
@click.argument("run_id")
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@timeout_option
def show(run_id: str, tracking_uri: str | None, fmt: str, timeout: int) -> None:
    """Show one run: status, params, metrics, artifacts, diagram and probe outputs.

    Exit codes: 0 success, 1 when the run has no topselect data or an artifact is
    unreadable (stderr names it) or the store could not be read, 2 for an unknown run.
    """
    from topselect.cli._compare import open_client

    uri, client = open_client(tracking_uri)
    with read_failure(uri):
        document, problems = _show_document(client, run_id, uri)
    notes = []
    if document["role"] is None:
        notes.append(f"Run {run_id} carries no topselect data (no topselect.role tag).")
    if fmt == "json":
        from topselect.search._attrs import json_safe

        document["problems"] = [str(p) for p in problems]
        text = json.dumps(json_safe(document), indent=2, allow_nan=False)
    else:
        text = _text(document)
    echo_notes(notes, problems)
    click.echo(text)
    if notes or problems:
        raise SystemExit(PARTIAL_EXIT_CODE)
