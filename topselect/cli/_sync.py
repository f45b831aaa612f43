"""``topselect sync``: upload MLflow writes that were spooled while a store was unreachable."""

from __future__ import annotations

from pathlib import Path

import click

from topselect.cli import PARTIAL_EXIT_CODE, timeout_option


@click.command()
@click.option(
    "--spool-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Spool directory [default: $TOPSELECT_SPOOL_DIR, else ~/.cache/topselect/spool].",
)
@click.option(
    "--tracking-uri",
    default=None,
    help="Upload only the writes for this tracking URI [default: every URI in the spool].",
)
@timeout_option
def sync(spool_dir: Path | None, tracking_uri: str | None, timeout: int) -> None:
    """Upload spooled MLflow writes, in the order they were made, and empty the spool.

    Every write keeps its original timestamp. Runs that could not be created while the
    store was unreachable are created now, tagged with their placeholder id. Exit codes:
    0 when the spool is empty afterwards, 1 when writes remain (the store is still
    unreachable; run the command again later).
    """
    from topselect.tracking import StudyLogger, default_spool_dir
    from topselect.tracking._spool import spooled_uris

    directory = spool_dir or default_spool_dir()
    uris = [tracking_uri] if tracking_uri else spooled_uris(directory)
    if not uris:
        click.echo(f"Nothing to upload in {directory}.")
        return
    remaining = 0
    for uri in uris:
        result = StudyLogger(uri, spool_dir=directory).sync()
        remaining += result.remaining
        click.echo(
            f"{uri}: uploaded {result.operations} writes of {result.runs} runs; "
            f"{result.remaining} runs remain."
        )
        for message in result.errors:
            click.echo(f"Upload stopped: {message}", err=True)
    if remaining:
        raise SystemExit(PARTIAL_EXIT_CODE)
