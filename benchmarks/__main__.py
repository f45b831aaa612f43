"""Command line of the benchmark suite.

Usage::

    python -m benchmarks list
    python -m benchmarks render RECORD.json [--markdown FILE]
    python -m benchmarks run NAME [--quick] [--seed N] [--output-dir DIR]
                                  [--markdown FILE | --no-markdown] [--threads N]
                                  [-- SCRIPT ARGUMENTS]

A full-size run writes ``benchmarks/results/NAME.json`` and replaces its own marked
section of BENCHMARKS.md. A ``--quick`` run writes ``NAME_quick.json`` and touches no
Markdown file unless ``--markdown`` is given, and ``render`` of a quick record follows
the same rule. A standalone script (see ``list``) runs unchanged in a subprocess and
writes its own results and no Markdown, while the runner writes ``NAME.run.json`` with
the command, the environment and the wall time.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from benchmarks.suite import BENCHMARKS, RunOptions, get, run_benchmark
from benchmarks.suite._record import RecordError, load_record
from benchmarks.suite._report import replace_section
from benchmarks.suite._runner import REPOSITORY, check_markdown_file, render_section

# Seeds go to NumPy's RandomState through Optuna's samplers, which accept [0, 2**32 - 1].
_MAX_SEED = 2**32 - 1


def _positive_int(text: str) -> int:
    """Parse an integer >= 1, for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {value}")
    return value


def _seed(text: str) -> int:
    """Parse a seed in [0, 2**32 - 1], for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= value <= _MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be an integer in [0, {_MAX_SEED}], but got {value}"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    # The raw formatter keeps the usage block of the module docstring on its own lines.
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the registered benchmarks")

    render = commands.add_parser(
        "render", help="rewrite a Markdown section from a stored JSON record, running nothing"
    )
    render.add_argument("record", type=Path, help="JSON record written by `run`")
    render.add_argument(
        "--markdown",
        type=Path,
        help="Markdown file whose marked section is replaced (default: BENCHMARKS.md for "
        "full records, none for --quick records)",
    )

    run = commands.add_parser("run", help="run one benchmark and record its result")
    run.add_argument("name", help="benchmark name (see `list`)")
    run.add_argument("--quick", action="store_true", help="smoke size, about a minute")
    run.add_argument(
        "--seed", type=_seed, default=0, help=f"seed of everything drawn, 0 to {_MAX_SEED}"
    )
    run.add_argument(
        "--output-dir",
        type=Path,
        default=REPOSITORY / "benchmarks" / "results",
        help="directory of the JSON result (default: benchmarks/results)",
    )
    markdown = run.add_mutually_exclusive_group()
    markdown.add_argument(
        "--markdown",
        type=Path,
        help="Markdown file whose marked section is replaced (default: BENCHMARKS.md for "
        "full runs, none for --quick)",
    )
    markdown.add_argument("--no-markdown", action="store_true", help="write no Markdown")
    run.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch threads of this process, >= 1 (default: 1). A standalone script takes "
        "its own options after --",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # Everything after "--" goes to a standalone script unparsed, because argparse
    # subcommands do not pass "--" through to a positional argument.
    script_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, script_args = argv[:split], argv[split + 1 :]
    arguments = _parser().parse_args(argv)
    if arguments.command == "list":
        for benchmark in BENCHMARKS.values():
            quick = "" if benchmark.has_quick else " (no --quick)"
            print(f"{benchmark.name:24} {benchmark.summary}{quick}")
        return 0
    if arguments.command == "render":
        return _render(arguments.record, arguments.markdown)
    try:
        benchmark = get(arguments.name)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    if arguments.no_markdown:
        markdown = None
    elif arguments.markdown is not None:
        markdown = arguments.markdown
    else:
        markdown = None if arguments.quick else REPOSITORY / "BENCHMARKS.md"
    options = RunOptions(
        quick=arguments.quick,
        seed=arguments.seed,
        output_dir=arguments.output_dir,
        markdown=markdown,
        threads=arguments.threads,
        script_args=tuple(script_args),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        path = run_benchmark(benchmark, options)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _render(record_path: Path, markdown: Path | None) -> int:
    try:
        record = load_record(record_path)
        benchmark = get(record["benchmark"])
    except (RecordError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) else str(error)
        print(f"error: {record_path}: {message}", file=sys.stderr)
        return 2
    if benchmark.module is None:
        print(
            f"error: {record_path}: {benchmark.name} is a standalone script without a section.",
            file=sys.stderr,
        )
        return 2
    try:
        name, body = render_section(benchmark, record, record_path)
    except RecordError as error:
        print(f"error: {record_path}: {error}", file=sys.stderr)
        return 2
    if markdown is None:
        if record["size"] == "quick":
            print(
                f"{record_path} is a --quick record, so no Markdown was written. Pass "
                f"--markdown FILE to write its section.",
                file=sys.stderr,
            )
            return 0
        markdown = REPOSITORY / "BENCHMARKS.md"
    try:
        check_markdown_file(markdown)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    replace_section(markdown, name, body)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
