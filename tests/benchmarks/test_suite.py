"""Tests of the benchmark suite: one quick benchmark end to end, the command line, the
Markdown sections and the statistics."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.suite import _report, _stats
from benchmarks.suite.predictiveness import LEVELS, make_design

REPOSITORY = Path(__file__).resolve().parents[2]


def _run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_quick_predictiveness_writes_record(tmp_path: Path) -> None:
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\nHand-written text stays.\n")
    done = _run_cli(
        "run",
        "predictiveness",
        "--quick",
        "--output-dir",
        str(tmp_path),
        "--markdown",
        str(markdown),
    )
    assert done.returncode == 0, done.stderr[-3000:]

    record = json.loads((tmp_path / "predictiveness_quick.json").read_text())
    assert record["size"] == "quick"
    assert record["command"] == "python -m benchmarks run predictiveness --quick"
    environment = record["environment"]
    assert environment["machine"]["cpu"]
    assert environment["machine"]["torch_threads"] == 1
    assert environment["packages"]["torch"]
    assert environment["packages"]["optuna"]
    assert "commit" in environment["git"]
    assert environment["timing"]["wall_seconds"] > 0
    assert len(environment["timing"]["load_average_start"]) == 3

    result = record["result"]
    for dataset in ("digits", "mnist1d"):
        assert len(result["models"][dataset]) == result["settings"]["models_per_dataset"]
        measures = result["statistics"][dataset]["all"]["measures"]
        assert math.isfinite(measures["val_loss"]["tau_test_accuracy"])

    text = markdown.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written text stays.\n")
    assert text.count("<!-- bench:predictiveness_quick -->") == 1
    assert text.count("<!-- /bench:predictiveness_quick -->") == 1


def test_cli_lists_benchmarks() -> None:
    done = _run_cli("list", timeout=60)
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    for name in ("predictiveness", "selection", "pruning", "homotopy", "probe_engine"):
        assert name in names


def test_cli_passes_script_arguments(tmp_path: Path) -> None:
    done = _run_cli(
        "run", "recorder_overhead", "--output-dir", str(tmp_path), "--", "--help", timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--repeats" in done.stdout
    record = json.loads((tmp_path / "recorder_overhead.run.json").read_text())
    assert record["command"] == "python -m benchmarks run recorder_overhead -- --help"
    assert record["result"]["arguments"] == ["--help"]
    assert not (tmp_path / "recorder_overhead.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "no_such_benchmark"), "unknown benchmark 'no_such_benchmark'"),
        (("run", "probe_engine", "--quick"), "without a --quick size"),
    ],
)
def test_cli_rejects_bad_run(args: tuple[str, ...], message: str) -> None:
    done = _run_cli(*args, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr


def test_replace_section_keeps_other_text(tmp_path: Path) -> None:
    path = tmp_path / "B.md"
    path.write_text("# Title\n\nintro\n")
    _report.replace_section(path, "a", "first A")
    _report.replace_section(path, "b", "only B")
    _report.replace_section(path, "a", "second A")
    text = path.read_text()
    assert text.startswith("# Title\n\nintro\n")
    assert "first A" not in text
    assert text.count("second A") == 1
    assert text.index("<!-- bench:a -->") < text.index("<!-- bench:b -->")
    assert "only B" in text


def test_replace_section_creates_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "B.md"
    _report.replace_section(path, "x", "body")
    assert path.read_text() == "<!-- bench:x -->\nbody\n<!-- /bench:x -->\n"


def test_kendall_tau_ignores_nonfinite_rows() -> None:
    tau = _stats.kendall_tau([1, 2, 3, math.nan, 4], [10, 20, 30, 0, 40])
    assert tau == pytest.approx(1.0)


def test_kendall_tau_constant_is_nan() -> None:
    assert math.isnan(_stats.kendall_tau([1, 1, 1], [1, 2, 3]))


def test_granulated_psi_averages_per_hyperparameter() -> None:
    groups = {
        "lr": [([1, 2, 3], [1, 2, 3]), ([1, 2, 3], [3, 2, 1])],  # psi_lr = 0
        "width": [([1, 2], [1, 2])],  # psi_width = 1
        "depth": [([1, 1], [1, 2])],  # undefined, left out
    }
    psi, terms = _stats.granulated_psi(groups)
    assert terms["lr"] == pytest.approx(0.0)
    assert terms["width"] == pytest.approx(1.0)
    assert math.isnan(terms["depth"])
    assert psi == pytest.approx(0.5)


def test_partial_residuals_remove_control() -> None:
    rng = np.random.default_rng(0)
    control = rng.normal(size=200)
    noise = rng.normal(size=200)
    y = 3.0 * control + noise
    residual = _stats.residuals(y, control)
    assert abs(np.corrcoef(residual, control)[0, 1]) < 1e-9
    assert _stats.r_squared(residual, noise) > 0.99


def test_bootstrap_interval_contains_mean() -> None:
    values = np.random.default_rng(1).normal(loc=2.0, size=50)
    low, high = _stats.bootstrap_interval(values, seed=0)
    assert low < values.mean() < high


def test_design_varies_one_hyperparameter_per_group() -> None:
    design = make_design(5, seed=0, levels=LEVELS)
    assert len(design.configs) >= 60
    for name, groups in design.groups.items():
        for group in groups:
            configs = [design.configs[i] for i in group]
            assert sorted(map(str, (c[name] for c in configs))) == sorted(map(str, LEVELS[name]))
            others = {tuple((k, v) for k, v in c.items() if k != name) for c in configs}
            assert len(others) == 1
