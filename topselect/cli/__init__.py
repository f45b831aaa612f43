"""The ``topselect`` command line: ``compare``, ``show``, ``sync`` and ``demo``.

Results go to stdout, progress and messages to stderr. Exit codes: 0 on success; 1 when
the result is partial (runs without topselect data, artifacts missing or unreadable,
writes left in the spool) or a store could not be read; 2 for a usage error (bad option,
unknown experiment, run or column).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from topselect import __version__

#: Exit code of a command whose result is partial or that could not read a store.
PARTIAL_EXIT_CODE = 1
#: Seconds a read command waits for one HTTP response by default.
DEFAULT_TIMEOUT_SECONDS = 15


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
    # MLflow draws a progress bar on stderr for every artifact it downloads.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # urllib3 logs every retry of an unreachable tracking server as a WARNING line.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)


def timeout_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--timeout SECONDS`` and bound MLflow's HTTP calls before the command runs.

    A read command fails fast instead of retrying: no retries, and ``--timeout`` seconds
    per request. Without ``--timeout``, ``MLFLOW_HTTP_REQUEST_*`` variables the user set
    win over these bounds.
    """

    @click.option(
        "--timeout",
        type=click.IntRange(min=1),
        default=DEFAULT_TIMEOUT_SECONDS,
        show_default=True,
        help="Seconds to wait for each response of a tracking server.",
    )
    @click.pass_context
    @functools.wraps(command)
    def wrapper(context: click.Context, *args: Any, timeout: int, **kwargs: Any) -> Any:
        from topselect.tracking._writer import bound_http_retries

        if context.get_parameter_source("timeout") != click.core.ParameterSource.DEFAULT:
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
        bound_http_retries(max_retries=0, timeout_seconds=timeout)
        return command(*args, timeout=timeout, **kwargs)

    return wrapper


@contextmanager
def read_failure(uri: str) -> Iterator[None]:
    """Turn errors of reading a store into one-line click errors.

    Unknown names and bad selections exit 2; any other failure (an unreachable server,
    a broken store) exits 1, with the error's first line and no traceback.
    """
    from topselect.exceptions import TrackingError

    try:
        yield
    except (click.ClickException, SystemExit):
        raise
    except TrackingError as error:
        raise UserError(str(error)) from None
    except Exception as error:  # Any MLflow or network failure: one line, no traceback.
        if logging.getLogger("topselect").level <= logging.DEBUG:
            raise
        lines = str(error).strip().splitlines()
        first_line = lines[0] if lines else ""
        raise click.ClickException(
            f"could not read {uri}: {type(error).__name__}: {first_line} (run with -vv for "
            "the traceback)"
        ) from None


def echo_notes(notes: Sequence[str], problems: Sequence[object] = ()) -> None:
    """Write notes, then one ``Left out:`` line per unusable artifact, to stderr."""
    for note in notes:
        click.echo(note, err=True)
    for problem in problems:
        click.echo(f"Left out: {problem}", err=True)


def _register() -> None:
    from topselect.cli._compare import compare
    from topselect.cli._demo import demo
    from topselect.cli._show import show
    from topselect.cli._sync import sync

    cli.add_command(compare)
    cli.add_command(show)
    cli.add_command(sync)
    cli.add_command(demo)


_register()


def main() -> None:
    """Run the command line (the ``topselect`` console script)."""
    cli()
