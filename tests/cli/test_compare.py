"""``topselect compare`` on the shared tracked study, through click's ``CliRunner``."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result
from mlflow import MlflowClient

import topselect
from topselect.cli import cli

# Variables that ``compare`` sets in os.environ to bound MLflow's HTTP retries.
HTTP_RETRY_VARIABLES = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)
TRIAL_KEYS = {
    "rank",
    "trial",
    "state",
    "value",
    "adjusted_value",
    "scores",
    "class_id",
    "fitted",
}


@pytest.fixture(autouse=True)
def restore_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo the variables that ``compare`` sets in this process, and ignore the user's URI."""
    for name in (*HTTP_RETRY_VARIABLES, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


def compare(*args: str) -> Result:
    return CliRunner().invoke(cli, ["compare", *args])


def expected_order(tracked_study) -> list[int]:
    return [entry.record.number for entry in topselect.rank_trials(tracked_study.load())]


def assert_one_line_error(result: Result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert len(lines) == 1, result.output
    return lines[0]


# -- output formats -----------------------------------------------------------------------


def test_compare_table_follows_rank_trials(tracked_study) -> None:
    result = compare(tracked_study.study_name, "--tracking-uri", tracked_study.tracking_uri)

    assert result.exit_code == 0, result.output
    lines = result.stdout.split("\n\n")[0].splitlines()
    header = lines[0].split()
    assert header[:5] == ["rank", "trial", "state", "value", "adjusted"]
    assert set(lines[1]) == {"-", " "}
    rows = [line.split() for line in lines[2:]]
    assert [int(row[1]) for row in rows] == expected_order(tracked_study)
    assert [int(row[0]) for row in rows] == list(range(1, tracked_study.n_trials + 1))


def test_compare_json_document(tracked_study) -> None:
    result = compare(
        tracked_study.study_name,
        "--tracking-uri",
        tracked_study.tracking_uri,
        "--format",
        "json",
    )

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema_version"] == 2
    assert document["experiment"] == tracked_study.study_name
    assert (
        document["parent_run_id"]
        == (tracked_study.load().user_attrs["topselect.mlflow_parent_run_id"])
    )
    assert document["direction"] == "maximize"
    assert document["weight"] == 0.01
    assert document["score"] == "basin_area_0.1"
    assert [row["trial"] for row in document["trials"]] == expected_order(tracked_study)
    for row in document["trials"]:
        assert TRIAL_KEYS <= row.keys(), (
            f"trial {row.get('trial')} lacks {TRIAL_KEYS - row.keys()}"
        )


def test_compare_json_matches_optuna_values(tracked_study) -> None:
    ranking = {e.record.number: e for e in topselect.rank_trials(tracked_study.load())}
    result = compare(
        tracked_study.study_name,
        "--tracking-uri",
        tracked_study.tracking_uri,
        "--format",
        "json",
    )

    assert result.exit_code == 0, result.output
    for row in json.loads(result.stdout)["trials"]:
        entry = ranking[row["trial"]]
        assert row["rank"] == entry.rank
        assert row["state"] == entry.record.state
        assert row["ranked_value"] == pytest.approx(entry.ranked_value)
        assert row["adjusted_value"] == pytest.approx(entry.adjusted_value)
        assert row["fitted"] == entry.record.fitted
        assert row["class_id"] == entry.record.class_id
        # Only completed trials: Optuna 5.1 gives a pruned trial its last intermediate
        # value as value, while MLflow stores no final value for it.
        if row["state"] == "COMPLETE":
            assert row["value"] == pytest.approx(entry.record.value)


def test_compare_csv_one_row_per_trial(tracked_study) -> None:
    result = compare(
        tracked_study.study_name,
        "--tracking-uri",
        tracked_study.tracking_uri,
        "--format",
        "csv",
    )

    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    header, body = rows[0], rows[1:]
    assert header[:2] == ["rank", "trial"]
    assert len(body) == tracked_study.n_trials
    assert all(len(row) == len(header) for row in body)
    assert [int(row[1]) for row in body] == expected_order(tracked_study)


def test_compare_reads_tracking_uri_from_environment(
    tracked_study, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked_study.tracking_uri)

    result = compare(tracked_study.study_name, "--format", "json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["experiment"] == tracked_study.study_name


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["no-such-study", "digits-mlpx"])
def test_compare_unknown_experiment_one_line(tracked_study, name: str) -> None:
    result = compare(name, "--tracking-uri", tracked_study.tracking_uri)

    line = assert_one_line_error(result)
    assert f"experiment {name!r} not found" in line


def test_compare_unknown_experiment_suggests_near(tracked_study) -> None:
    result = compare("digits-mlpx", "--tracking-uri", tracked_study.tracking_uri)

    assert f"Did you mean {tracked_study.study_name!r}?" in assert_one_line_error(result)


def test_compare_unknown_parent_run_one_line(tracked_study) -> None:
    result = compare(
        tracked_study.study_name,
        "--tracking-uri",
        tracked_study.tracking_uri,
        "--parent-run",
        "0123456789abcdef",
    )

    line = assert_one_line_error(result)
    assert "run '0123456789abcdef' is not a study run" in line


def test_compare_experiment_without_study_run(tracking_uri: str) -> None:
    MlflowClient(tracking_uri=tracking_uri).create_experiment("plain-runs")

    result = compare("plain-runs", "--tracking-uri", tracking_uri)

    assert result.exit_code == 0, result.output
    assert "Experiment 'plain-runs' contains no topselect study run" in result.stderr
    assert "No run matches the selection." in result.stderr
    assert result.stdout.strip().splitlines()[0].split()[:2] == ["rank", "trial"]


@pytest.mark.parametrize("relative", ["absent.db", "missing-directory/mlflow.db"])
def test_compare_missing_sqlite_store_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: str
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / relative

    result = compare("digits-mlp", "--tracking-uri", f"sqlite:///{path}")

    line = assert_one_line_error(result)
    assert str(path) in line
    assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_compare_foreign_sqlite_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.commit()
    before = path.read_bytes()

    result = compare("digits-mlp", "--tracking-uri", f"sqlite:///{path}")

    line = assert_one_line_error(result)
    assert result.exit_code == 2
    assert "is not an MLflow tracking store" in line
    assert path.read_bytes() == before


def test_compare_suggests_case_insensitive_match(tracked_study) -> None:
    result = compare("DIGITS-MLP", "--tracking-uri", tracked_study.tracking_uri)

    line = assert_one_line_error(result)
    assert "Did you mean 'digits-mlp'?" in line


def test_compare_rejects_multi_objective_study(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = optuna.create_study(study_name="two-goals", directions=["minimize", "maximize"])
    topselect.StudyLogger(uri).prepare_study(study)

    result = compare("two-goals", "--tracking-uri", uri)

    line = assert_one_line_error(result)
    assert "several objectives (minimize/maximize)" in line
