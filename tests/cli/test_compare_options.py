"""Every option of ``topselect compare``, through click's ``CliRunner``.

Most tests read a synthetic study (``tests/cli/conftest.py``): four completed trials, two
per optimizer and class, whose probe outputs come from two pairs of identical models,
and one pruned trial. The distance and CKA values are checked against the library
functions on the same artifacts.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from mlflow import MlflowClient

from topselect.cli import cli
from topselect.topology import diagram_distance_matrix
from topselect.tracking import (
    decode_probe_outputs,
    diagram_from_json,
    linear_cka,
    prediction_agreement,
)
from topselect.tracking._artifacts import read_npz_artifact
from topselect.tracking._functional import PROBE_OUTPUTS_ARRAYS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMPLETED = [3, 2, 1, 0]  # rank order: values 0.8, 0.7, 0.6, 0.5, maximized


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_RETRIES", "BACKOFF_FACTOR", "TIMEOUT"):
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{name}", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def study(shared_synthetic_study):
    return shared_synthetic_study


def compare(study, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["compare", "synthetic", "--tracking-uri", study.tracking_uri, *args]
    )


def compare_json(study, *args: str) -> dict:
    result = compare(study, "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def trial_numbers(document: dict) -> list[int]:
    return [row["trial"] for row in document["trials"]]


# -- selection ----------------------------------------------------------------------------


def test_compare_ranks_completed_then_pruned(study) -> None:
    document = compare_json(study)

    assert trial_numbers(document) == [*COMPLETED, 4]
    assert document["parent_run_id"] == study.parent_run_id
    assert all(row["topselect"] for row in document["trials"])


def test_compare_experiment_by_id(study) -> None:
    experiment = MlflowClient(study.tracking_uri).get_experiment_by_name("synthetic")
    result = CliRunner().invoke(
        cli,
        ["compare", experiment.experiment_id, "--tracking-uri", study.tracking_uri],
    )

    assert result.exit_code == 0, result.output
    ranking = result.stdout.split("\n\n")[0].splitlines()
    assert [int(line.split()[1]) for line in ranking[2:]] == [*COMPLETED, 4]


def test_compare_parent_run_option(study) -> None:
    document = compare_json(study, "--parent-run", study.parent_run_id)

    assert document["parent_run_id"] == study.parent_run_id
    assert sorted(trial_numbers(document)) == [0, 1, 2, 3, 4]


def test_compare_run_id_selection(study) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "compare",
            "--tracking-uri",
            study.tracking_uri,
            "--format",
            "json",
            "--run-id",
            study.run_ids[1],
            "--run-id",
            study.run_ids[3],
        ],  # fmt: skip
    )

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert trial_numbers(document) == [3, 1]
    assert document["direction"] == "maximize"
    assert document["experiment"] == "synthetic"


def test_compare_tag_filter_on_server(study) -> None:
    document = compare_json(study, "--tag", "topselect.class_id=c1")

    assert trial_numbers(document) == [3, 2]


def test_compare_tag_without_experiment(study) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "compare",
            "--tracking-uri",
            study.tracking_uri,
            "--format",
            "json",
            "--tag",
            "topselect.state=PRUNED",
        ],  # fmt: skip
    )

    assert result.exit_code == 0, result.output
    assert trial_numbers(json.loads(result.stdout)) == [4]


def test_compare_filter_string(study) -> None:
    document = compare_json(study, "--filter", "metrics.value >= 0.65")

    assert trial_numbers(document) == [3, 2]


def test_compare_pages_through_all_runs(study) -> None:
    paged = compare_json(study, "--page-size", "2")

    assert trial_numbers(paged) == trial_numbers(compare_json(study))


# -- columns, sorting and formats -----------------------------------------------------------


def test_compare_table_columns(study) -> None:
    result = compare(study)

    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    for column in ("rank", "trial", "state", "value", "adjusted", "class", "duration_s", "run"):
        assert column in header
    assert "basin_area_0.1" in header


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("trial", [0, 1, 2, 3, 4]),
        ("-trial", [4, 3, 2, 1, 0]),
        ("value", [0, 1, 2, 3, 4]),
        ("-value", [4, 3, 2, 1, 0]),
        ("rank", [*COMPLETED, 4]),
    ],
)
def test_compare_sort(study, sort: str, expected: list[int]) -> None:
    assert trial_numbers(compare_json(study, f"--sort={sort}")) == expected


def test_compare_sort_by_duration(study) -> None:
    document = compare_json(study, "--sort=-duration_s")
    durations = [row["duration_s"] for row in document["trials"]]

    assert durations == sorted(durations, reverse=True)
    assert all(isinstance(d, float) and d >= 0 for d in durations)


def test_compare_markdown(study) -> None:
    result = compare(study, "--format", "markdown", "--distances", "sliced")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| rank | trial | state |")
    assert lines[1].startswith("|---|")
    assert "### H0 sliced distances" in result.stdout
    assert "### Classes" in result.stdout


def test_compare_csv(study) -> None:
    result = compare(study, "--format", "csv")

    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0][:3] == ["rank", "trial", "state"]
    assert [int(row[1]) for row in rows[1:]] == [*COMPLETED, 4]


# -- classes -----------------------------------------------------------------------------------


def test_compare_class_summary(study) -> None:
    classes = {row["class_id"]: row for row in compare_json(study)["classes"]}

    assert sorted(classes) == ["c0", "c1"]
    assert classes["c0"]["members"] == [0, 1]
    assert classes["c1"]["members"] == [2, 3]
    assert classes["c1"]["best_trial"] == 3
    assert classes["c0"]["value_spread"] == pytest.approx(0.1)
    assert classes["c0"]["value_std"] == pytest.approx(0.05)


# -- distances ----------------------------------------------------------------------------


def diagrams_of(study, trials: list[int]) -> list[dict]:
    out = []
    for trial in trials:
        document = json.loads(study.artifact(trial, "diagram.json").read_text())
        out.append(diagram_from_json(document))
    return out


@pytest.mark.parametrize("metric", ["bottleneck", "wasserstein", "sliced"])
def test_compare_distances_match_library(study, metric: str) -> None:
    document = compare_json(study, "--distances", metric)
    matrices = {m["dimension"]: m for m in document["distances"]}
    diagrams = diagrams_of(study, COMPLETED)

    assert sorted(matrices) == ["h0", "h1"]
    for dimension, matrix in matrices.items():
        expected = diagram_distance_matrix([d[dimension] for d in diagrams], metric)
        assert matrix["metric"] == metric
        assert matrix["trials"] == [str(n) for n in COMPLETED]
        assert np.allclose(np.array(matrix["values"], dtype=float), expected)
    assert matrices["h0"]["essential_bars"] == [1, 1, 1, 1]


def test_compare_distances_one_dimension(study) -> None:
    document = compare_json(study, "--distances", "bottleneck", "--dimension", "h1")

    assert [m["dimension"] for m in document["distances"]] == ["h1"]


def test_compare_distances_top(study) -> None:
    document = compare_json(study, "--distances", "sliced", "--top", "2")

    assert document["distances"][0]["trials"] == ["3", "2"]


def test_compare_distances_max_points(study) -> None:
    truncated = compare_json(study, "--distances", "wasserstein", "--max-points", "1")
    diagrams = diagrams_of(study, COMPLETED)
    expected = diagram_distance_matrix([d["h0"] for d in diagrams], "wasserstein", max_points=1)

    h0 = next(m for m in truncated["distances"] if m["dimension"] == "h0")
    assert np.allclose(np.array(h0["values"], dtype=float), expected)


def test_compare_infinite_distance_explicit(synthetic_study) -> None:
    path = synthetic_study.artifact(0, "diagram.json")
    document = json.loads(path.read_text())
    document["h0"].append([0.0, None])  # a second essential bar
    path.write_text(json.dumps(document))

    result = CliRunner().invoke(
        cli,
        [
            "compare",
            "synthetic",
            "--tracking-uri",
            synthetic_study.tracking_uri,
            "--format",
            "json",
            "--distances",
            "bottleneck",
            "--dimension",
            "h0",
        ],  # fmt: skip
    )

    assert result.exit_code == 0, result.output
    matrix = json.loads(result.stdout)["distances"][0]
    index = matrix["trials"].index("0")
    assert matrix["essential_bars"][index] == 2
    row = matrix["values"][index]
    assert [value for i, value in enumerate(row) if i != index] == ["inf"] * 3


# -- functional equivalence -----------------------------------------------------------------


def test_compare_equivalence_matches_library(study) -> None:
    document = compare_json(study, "--equivalence")
    equivalence = document["equivalence"]
    outputs = [
        decode_probe_outputs(
            read_npz_artifact(
                study.artifact(n, "probe_outputs.npz"), label=str(n), required=PROBE_OUTPUTS_ARRAYS
            )
        )
        for n in COMPLETED
    ]

    assert equivalence["trials"] == [str(n) for n in COMPLETED]
    for i, a in enumerate(outputs):
        for j, b in enumerate(outputs):
            expected_agreement = prediction_agreement(a.predictions, b.predictions)
            expected_cka = linear_cka(a.features, b.features)
            assert equivalence["agreement"][i][j] == pytest.approx(expected_agreement)
            assert equivalence["cka"][i][j] == pytest.approx(expected_cka)
    # Trials 0 and 1, and 2 and 3, come from identical models.
    assert equivalence["cka"][0][1] == pytest.approx(1.0)
    assert equivalence["agreement"][2][3] == pytest.approx(1.0)


def test_compare_equivalence_groups(study) -> None:
    groups = compare_json(study, "--equivalence")["equivalence"]["groups"]
    by_key = {(g["group_by"], g["a"], g["b"]): g for g in groups}

    assert by_key[("optimizer", "adam", "adam")]["equivalent"] == 1.0
    assert by_key[("optimizer", "sgd", "sgd")]["equivalent"] == 1.0
    assert by_key[("optimizer", "adam", "sgd")]["pairs"] == 4
    assert by_key[("class", "c0", "c0")]["mean_cka"] == pytest.approx(1.0)
    assert by_key[("class", "c0", "c1")]["mean_cka"] < 1.0


def test_compare_equivalence_group_by_param(study) -> None:
    groups = compare_json(study, "--equivalence", "--group-by", "lr")["equivalence"]["groups"]

    assert {g["group_by"] for g in groups} == {"class", "lr"}


def test_compare_equivalence_table(study) -> None:
    result = compare(study, "--equivalence")

    assert result.exit_code == 0, result.output
    assert "Prediction agreement on the probe set" in result.stdout
    assert "Linear CKA of penultimate features" in result.stdout
    assert "Equivalence between groups" in result.stdout


# -- plot -----------------------------------------------------------------------------------


def test_compare_plot_png(study, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "compare.png"
    result = compare(study, "--plot", str(path), "--equivalence")

    assert result.exit_code == 0, result.output
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.text["topselect.schema_version"] == "1"
        assert image.width > 500
    assert f"Wrote the figure to {path}" in result.stderr
