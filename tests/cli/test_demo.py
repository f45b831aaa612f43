"""``topselect demo``: a real search on scikit-learn's digits, run in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from topselect.cli import cli

HTTP_RETRY_VARIABLES = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)


@pytest.fixture(autouse=True)
def demo_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``tmp_path``, ignore the user's tracking URI, and undo what the demo sets."""
    monkeypatch.chdir(tmp_path)
    for name in (*HTTP_RETRY_VARIABLES, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def ranking_rows(stdout: str) -> list[list[str]]:
    """Return the rows of the ranking table that ends the demo's output."""
    lines = stdout.strip().splitlines()
    header_index = max(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "trial"])
    assert set(lines[header_index + 1]) == {"-", " "}
    return [line.split() for line in lines[header_index + 2 :]]


def assert_demo_report(result: Result, n_trials: int, tracking_uri: str) -> None:
    assert result.exit_code == 0, result.output
    assert "Best by validation:" in result.stdout
    assert "Best by topselect:" in result.stdout
    assert f"mlflow ui --backend-store-uri {tracking_uri}" in result.stdout
    assert (
        "Ranking (topselect.rank_trials; also `topselect compare topselect-demo`):"
        in result.stdout
    )
    rows = ranking_rows(result.stdout)
    assert len(rows) == n_trials
    assert sorted(int(row[1]) for row in rows) == list(range(n_trials))
    assert "Traceback" not in result.output


def test_demo_short_run_reports(demo_directory: Path) -> None:
    tracking_uri = f"sqlite:///{demo_directory / 'mlflow.db'}"

    result = CliRunner().invoke(
        cli,
        [
            "demo",
            "--trials",
            "3",
            "--epochs",
            "3",
            "--grid-size",
            "9",
            "--tracking-uri",
            tracking_uri,
        ],
    )

    assert_demo_report(result, 3, tracking_uri)
    assert (demo_directory / "mlflow.db").is_file()
    # The demo's table comes from rank_trials on the Optuna study, and compare reads the
    # MLflow runs. Both rank alike: rank, trial, state, value and adjusted value agree
    # (compare may show more columns, from MLflow metrics).
    compared = CliRunner().invoke(
        cli, ["compare", "topselect-demo", "--tracking-uri", tracking_uri]
    )
    assert compared.exit_code == 0, compared.output
    demo_ranking = [row[:5] for row in ranking_rows(result.stdout)]
    assert [row[:5] for row in ranking_rows(compared.stdout)] == demo_ranking


def test_demo_even_grid_size_rejected() -> None:
    result = CliRunner().invoke(cli, ["demo", "--trials", "1", "--grid-size", "10"])

    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: --grid-size must be odd, but got 10. Try 11."
    ]


def test_demo_unknown_storage_scheme_one_line(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    result = CliRunner().invoke(
        cli, ["demo", "--trials", "1", "--storage", "bogus://x", "--tracking-uri", uri]
    )

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "the search failed: NoSuchModuleError" in result.output


@pytest.mark.slow
def test_demo_default_settings(demo_directory: Path) -> None:
    result = CliRunner().invoke(cli, ["demo"])

    # With no URI given, the demo uses MLflow's own default store in the working directory.
    default_trials = next(p.default for p in cli.commands["demo"].params if p.name == "trials")
    assert default_trials == 40
    assert_demo_report(result, default_trials, f"sqlite:///{demo_directory / 'mlflow.db'}")
    assert (demo_directory / "mlflow.db").is_file()
