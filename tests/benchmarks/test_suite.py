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

from benchmarks.suite import _report, _stats, get
from benchmarks.suite._runner import check_output_dir
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
    assert "transfer" in names
    transfer = next(line for line in done.stdout.splitlines() if line.startswith("transfer "))
    assert "(no --quick)" in transfer


def test_registry_runs_transfer_script_unchanged() -> None:
    transfer = get("transfer")
    assert transfer.module is None
    assert transfer.script == "transfer.py"
    assert not transfer.has_quick
    assert (REPOSITORY / "benchmarks" / transfer.script).is_file()


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
        (("run", "transfer", "--quick"), "without a --quick size"),
        (("run", "selection", "--threads", "0"), "--threads: must be an integer >= 1, but got 0"),
        (("run", "selection", "--threads", "-3"), "--threads: must be an integer >= 1"),
        (("run", "selection", "--threads", "abc"), "--threads: invalid int value: 'abc'"),
        (("run", "selection", "--seed", "-1"), "--seed: must be an integer in [0, 4294967295]"),
    ],
)
def test_cli_rejects_bad_run(args: tuple[str, ...], message: str) -> None:
    done = _run_cli(*args, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_rejects_unwritable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (("--output-dir", str(blocker)), f"output directory {blocker} is not a directory"),
        (("--output-dir", str(blocker / "sub")), f"cannot write to output directory {blocker}"),
        (
            ("--output-dir", str(tmp_path), "--markdown", str(blocker / "B.md")),
            f"cannot write to directory {blocker} of the Markdown file",
        ),
        (("--output-dir", str(tmp_path), "--markdown", str(tmp_path)), "is a directory"),
    ]
    for args, message in cases:
        # The full size would train for minutes, so a quick exit shows the check ran first.
        done = _run_cli("run", "selection", *args, timeout=60)
        assert done.returncode == 2, args
        assert message in done.stderr, args
        assert "Traceback" not in done.stderr, args
    assert not list(tmp_path.glob("*.json"))


def test_check_output_dir_creates_directory(tmp_path: Path) -> None:
    output = tmp_path / "new" / "results"
    check_output_dir(output)
    assert output.is_dir()
    assert list(output.iterdir()) == []


def _stored_record(tmp_path: Path, name: str = "selection", **changes: object) -> Path:
    record = json.loads((REPOSITORY / "benchmarks" / "results" / f"{name}.json").read_text())
    record.update(changes)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(record))
    return path


def test_cli_renders_stored_record(tmp_path: Path) -> None:
    markdown = tmp_path / "B.md"
    done = _run_cli("render", str(_stored_record(tmp_path)), "--markdown", str(markdown))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(markdown)
    text = markdown.read_text()
    assert text.count("<!-- bench:selection -->") == 1
    assert "Command: `python -m benchmarks run selection`" in text


def test_cli_render_quick_record_needs_markdown(tmp_path: Path) -> None:
    record = _stored_record(tmp_path, size="quick")
    before = (REPOSITORY / "BENCHMARKS.md").read_text()
    done = _run_cli("render", str(record), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "no Markdown was written" in done.stderr
    assert (REPOSITORY / "BENCHMARKS.md").read_text() == before

    markdown = tmp_path / "B.md"
    done = _run_cli("render", str(record), "--markdown", str(markdown), timeout=60)
    assert done.returncode == 0, done.stderr
    assert markdown.read_text().count("<!-- bench:selection_quick -->") == 1


def test_cli_render_rejects_bad_records(tmp_path: Path) -> None:
    stored = json.loads((REPOSITORY / "benchmarks" / "results" / "selection.json").read_text())
    no_size = {key: value for key, value in stored.items() if key != "size"}
    no_cpu = json.loads(json.dumps(stored))
    del no_cpu["environment"]["machine"]["cpu"]
    bad_result = {**stored, "result": {}}
    (tmp_path / "folder.json").mkdir()

    files = {
        "truncated.json": '{"benchmark": "selection", ',
        "list.json": "[1, 2]",
        "empty.json": "{}",
        "unknown.json": json.dumps({**stored, "benchmark": "nope"}),
        "no_size.json": json.dumps(no_size),
        "bad_size.json": json.dumps({**stored, "size": "medium"}),
        "no_cpu.json": json.dumps(no_cpu),
        "bad_result.json": json.dumps(bad_result),
        "script.json": json.dumps({**stored, "benchmark": "transfer"}),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)

    cases = [
        ("missing.json", "file not found"),
        ("folder.json", "is a directory"),
        ("truncated.json", "invalid JSON at line 1"),
        ("list.json", "expected a JSON object, but got a list"),
        ("empty.json", "missing field 'benchmark'"),
        ("unknown.json", "unknown benchmark 'nope'"),
        ("no_size.json", "missing field 'size'"),
        ("bad_size.json", "field 'size' must be 'quick' or 'full', but got 'medium'"),
        ("no_cpu.json", "missing field 'environment.machine.cpu'"),
        ("bad_result.json", "missing field 'settings' in 'result'"),
        ("script.json", "transfer is a standalone script without a section"),
    ]
    markdown = tmp_path / "B.md"

    for name, message in cases:
        path = tmp_path / name
        done = _run_cli("render", str(path), "--markdown", str(markdown), timeout=60)
        assert done.returncode == 2, name
        assert done.stderr.startswith(f"error: {path}: {message}"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not markdown.exists()


def test_cli_help_keeps_usage_lines() -> None:
    done = _run_cli("--help", timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "    python -m benchmarks list" in lines
    assert "    python -m benchmarks render RECORD.json [--markdown FILE]" in lines


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
