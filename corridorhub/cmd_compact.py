"""``corridorhub compact``: remove duplicate samples and merge small files, while ingest keeps writing."""

from __future__ import annotations

import logging
import sys

import click
from tqdm import tqdm

from corridorhub._options import lake_option, settings_from
from store.compaction import compact
from store.lake import Lake
from store.repair import DAMAGED_DIR
from store.repair import repair as repair_lake
from store.schema import QUARANTINE, STREAMS, TABLES


@click.command("compact")
@lake_option
@click.option(
    "--table",
    "tables",
    type=click.Choice(TABLES),
    multiple=True,
    help="Only this table (repeatable) [default: all of state, event, network, quarantine].",
)
@click.option(
    "--repair",
    is_flag=True,
    help="First move every data file that cannot be read (a file torn by a power loss) to "
    "<lake>/_hub/damaged/ and drop it from its table; then compact.",
)
@click.pass_context
def command(ctx: click.Context, lake: str | None, tables: tuple[str, ...], repair: bool) -> None:
    """Deduplicate samples and merge small Parquet files, per date partition.

    Duplicates (same operator, device_id, seq and ts; ts alone when seq is absent) keep the earliest
    received_at; a reused seq with another ts is a new sample (a restarted counter), never removed.
    Each step is one atomic Delta commit; ingest may keep writing meanwhile.  Old files stay on disk for
    readers of earlier snapshots.
    """
    settings = settings_from(ctx, lake=lake)
    target = Lake(settings.lake)
    target.require()
    chosen = tables or (*STREAMS, QUARANTINE)
    if repair:
        damaged = repair_lake(target, chosen)
        for item in damaged:
            click.echo(f"moved {item.table}/{item.path} to {DAMAGED_DIR / item.table} ({item.reason})")
        click.echo(f"repair: {len(damaged)} unreadable file(s) set aside")
    # compact() logs each table's outcome at INFO for servers (POST /v1/compact); here the report below
    # says the same on stdout, so those lines would show every table twice.  Warnings still show, and
    # --log-level DEBUG shows everything.
    library_log = logging.getLogger(compact.__module__)
    quiet = library_log.getEffectiveLevel() > logging.DEBUG
    previous_level = library_log.level
    if quiet:
        library_log.setLevel(logging.WARNING)
    try:
        with tqdm(total=0, unit="partition", disable=not sys.stderr.isatty(), file=sys.stderr) as bar:

            def progress(done: int, total: int, label: str) -> None:
                bar.total = total
                bar.set_description(label)
                bar.update(done - bar.n)

            report = compact(target, chosen, progress)
    finally:
        library_log.setLevel(previous_level)
    click.echo(report.describe())
