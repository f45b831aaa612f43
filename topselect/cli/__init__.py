"""The ``topselect`` command line: ``compare`` and ``demo``.

Results go to stdout, progress and messages to stderr. Exit codes: 0 on success, 1 when
reading or writing a store failed, 2 for a usage error (bad option, unknown experiment).
"""

from __future__ import annotations

import logging
import os
import sys

import click

from topselect import __version__


class UserError(click.ClickException):
    """An error caused by the command's input; printed as one line, exit code 2."""

    exit_code = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="topselect")
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-v: INFO, -vv: DEBUG).")
def cli(verbose: int) -> None:
    """Topology-aware model selection for Optuna searches, logged to MLflow."""
    if verbose == 0:
        level = logging.WARNING
    elif verbose == 1:
        level = logging.INFO
    else:
        level = logging.DEBUG
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("topselect").setLevel(level)
    # MLflow logs its store migrations at INFO and configures its logger on import, from
    # this variable; a user's own setting wins.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if verbose >= 2 else "WARNING")
    # urllib3 logs every retry of an unreachable tracking server as a WARNING line.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)


def _register() -> None:
    from topselect.cli._compare import compare
    from topselect.cli._demo import demo

    cli.add_command(compare)
    cli.add_command(demo)


_register()


def main() -> None:
    """Run the command line (the ``topselect`` console script)."""
    cli()
