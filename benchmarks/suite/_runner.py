"""Run one registered benchmark and record its result with the environment it ran in."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.suite import _environment, _record, _report
from benchmarks.suite._registry import Benchmark

__all__ = [
    "RunOptions",
    "check_markdown_file",
    "check_output_dir",
    "render_section",
    "run_benchmark",
    "write_section",
]

_logger = logging.getLogger(__name__)

REPOSITORY = _environment.REPOSITORY


@dataclass(frozen=True)
class RunOptions:
    """How to run a benchmark.

    Attributes:
        quick: Run the smoke size (about a minute) instead of the full size.
        seed: Seed of everything the benchmark draws.
        output_dir: Directory of the JSON result.
        markdown: Markdown file whose marked section is replaced, or ``None`` for none.
        threads: torch intra-op threads of this process.
        script_args: Extra arguments passed to a standalone script.
    """

    quick: bool = False
    seed: int = 0
    output_dir: Path = REPOSITORY / "benchmarks" / "results"
    markdown: Path | None = None
    threads: int = 1
    script_args: tuple[str, ...] = field(default_factory=tuple)


def _command(benchmark: Benchmark, options: RunOptions) -> str:
    parts = ["python", "-m", "benchmarks", "run", benchmark.name]
    if options.quick:
        parts.append("--quick")
    if options.seed != 0:
        parts += ["--seed", str(options.seed)]
    if options.script_args:
        parts += ["--", *options.script_args]
    return shlex.join(parts)


def _environment_record(options: RunOptions) -> dict[str, Any]:
    return {
        "machine": _environment.describe_machine(options.threads),
        "packages": _environment.package_versions(),
        "git": _environment.git_commit(),
    }


def run_benchmark(benchmark: Benchmark, options: RunOptions) -> Path:
    """Run ``benchmark``, write its JSON record and, if asked, its Markdown section.

    Returns:
        Path of the JSON record.

    Raises:
        ValueError: When ``--quick`` is requested of a standalone script, or when the
            output directory or the Markdown file cannot be written. Both are checked
            before the benchmark starts.
        subprocess.CalledProcessError: When a standalone script exits with an error.
    """
    if benchmark.module is None and options.quick:
        raise ValueError(
            f"{benchmark.name} is a standalone script without a --quick size; run it "
            f"without --quick."
        )
    check_output_dir(options.output_dir)
    if options.markdown is not None and benchmark.module is not None:
        check_markdown_file(options.markdown)

    import torch

    torch.set_num_threads(options.threads)
    environment = _environment_record(options)
    clock = _environment.RunClock()
    if benchmark.module is not None:
        run, render = benchmark.functions()
        result = run(quick=options.quick, seed=options.seed)
    else:
        result = _run_script(benchmark, options)
        render = None
    environment["timing"] = clock.stop()
    record = {
        "benchmark": benchmark.name,
        "size": "quick" if options.quick else "full",
        "command": _command(benchmark, options),
        "seed": options.seed,
        "environment": environment,
        "result": result,
    }
    suffix = "_quick" if options.quick else ""
    # A standalone script writes its own NAME.json, so the run record goes beside it.
    extension = ".json" if benchmark.module is not None else ".run.json"
    path = _report.write_json(options.output_dir / f"{benchmark.name}{suffix}{extension}", record)
    if options.markdown is not None and render is not None:
        write_section(benchmark, record, path, options.markdown)
    return path


def write_section(
    benchmark: Benchmark, record: dict[str, Any], path: Path, markdown: Path
) -> None:
    """Replace the Markdown section of the run ``record``, which was stored at ``path``."""
    name, body = render_section(benchmark, record, path)
    _report.replace_section(markdown, name, body)


def render_section(benchmark: Benchmark, record: dict[str, Any], path: Path) -> tuple[str, str]:
    """Return the section name and the Markdown body of the run ``record`` stored at ``path``.

    Raises:
        RecordError: When the record lacks a field that the header or the benchmark's
            ``render`` function reads.
    """
    _record.check_header_fields(record)
    _, render = benchmark.functions()
    try:
        rendered = render(record["result"])
    except (KeyError, IndexError, TypeError, ValueError) as error:
        # A hand-edited or older record can lack fields, because each benchmark's render
        # function trusts the record that its own run wrote.
        raise _record.RecordError(_record.describe_render_error(error)) from error
    suffix = "_quick" if record["size"] == "quick" else ""
    return benchmark.name + suffix, _header(benchmark, record, path) + "\n\n" + rendered


def check_output_dir(directory: Path) -> None:
    """Create ``directory`` if it is missing and check that a file can be written in it.

    Raises:
        ValueError: Naming the directory and the reason, when either step fails.
    """
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"output directory {directory} is not a directory.")
    _check_writable_directory(directory, f"output directory {directory}")


def check_markdown_file(markdown: Path) -> None:
    """Create the directory of ``markdown`` if it is missing and check that the file can be
    read and replaced there.

    Raises:
        ValueError: Naming the file and the reason, when it cannot be written.
    """
    if markdown.is_dir():
        raise ValueError(f"Markdown file {markdown} is a directory.")
    if markdown.exists() and not os.access(markdown, os.R_OK | os.W_OK):
        raise ValueError(f"Markdown file {markdown} is not readable and writable.")
    _check_writable_directory(
        markdown.parent, f"directory {markdown.parent} of the Markdown file {markdown}"
    )


def _check_writable_directory(directory: Path, label: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Writing a scratch file is the reliable test, because os.access grants root
        # write access whatever the permission bits are.
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"cannot write to {label}: {reason}. Pass a writable path.") from None


def _run_script(benchmark: Benchmark, options: RunOptions) -> dict[str, Any]:
    assert benchmark.script is not None
    script = REPOSITORY / "benchmarks" / benchmark.script
    command = [sys.executable, str(script), *options.script_args]
    _logger.info("running %s", shlex.join(command))
    subprocess.run(command, cwd=REPOSITORY, check=True)
    return {"script": f"benchmarks/{benchmark.script}", "arguments": list(options.script_args)}


def _header(benchmark: Benchmark, record: dict[str, Any], path: Path) -> str:
    env = record["environment"]
    machine, git, timing = env["machine"], env["git"], env["timing"]
    packages = env["packages"]
    commit = git["commit"] or "unknown"
    if git["dirty"]:
        commit += " plus uncommitted changes"
    try:
        shown_path = path.resolve().relative_to(REPOSITORY)
    except ValueError:
        shown_path = path
    versions = ", ".join(
        f"{name} {packages[name]}" for name in ("torch", "optuna", "numpy", "scipy")
    )
    return (
        f"## {benchmark.title}\n\n"
        f"Command: `{record['command']}` (result: `{shown_path}`).\n"
        f"Machine: {machine['cpu']}, {machine['usable_cores']} usable of "
        f"{machine['logical_cores']} logical cores, {machine['memory_gib']} GiB, "
        f"{machine['platform']}; Python {machine['python']}, {versions}; "
        f"{machine['torch_threads']} torch thread(s). Started {timing['started_utc']} at "
        f"commit {commit}; wall time {timing['wall_seconds']:.0f} s; load average "
        f"{timing['load_average_start'][0]:.2f} at the start and "
        f"{timing['load_average_end'][0]:.2f} at the end. Seed {record['seed']}."
    )
