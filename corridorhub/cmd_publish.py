"""``corridorhub publish``: build, check and release open datasets for a range of Japan-time days."""

from __future__ import annotations

import sys
from datetime import date, datetime

import click
from tqdm import tqdm

from corridorhub._options import lake_option, settings_from
from publish.datasets import DATASETS, dataset_entry, default_ids, left_out_under_dp
from publish.errors import BadDateRange
from publish.release import STEPS, publish_release
from store.errors import CorridorHubError
from store.lake import Lake


def _day(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date such as 2025-03-14") from None


@click.command("publish")
@click.option(
    "--dataset",
    "dataset_ids",
    multiple=True,
    metavar="ID",
    help="Dataset to publish (repeatable): " + ", ".join(DATASETS) + ".",
)
@click.option("--all", "all_datasets", is_flag=True, help="Every dataset that is not opt-in.")
@click.option("--from", "date_from", callback=_day, metavar="DATE", help="First JST day (YYYY-MM-DD).")
@click.option(
    "--to", "date_to", callback=_day, metavar="DATE", help="Last JST day, inclusive [default: --from]."
)
@click.option("--csv-bom", is_flag=True, help="Start CSV files with a UTF-8 BOM (for Excel).")
@lake_option
@click.option(
    "--releases",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of published releases [default: ./data/releases].",
)
@click.pass_context
def command(
    ctx: click.Context,
    dataset_ids: tuple[str, ...],
    all_datasets: bool,
    date_from: date | None,
    date_to: date | None,
    csv_bom: bool,
    lake: str | None,
    releases: str | None,
) -> None:
    """Publish anonymized open datasets as immutable versioned releases.

    Each dataset is aggregated over the lake's committed snapshot for the JST days --from..--to, cells
    under k devices or dominated by one operator are suppressed (with complementary suppression), the
    privacy gate checks the output, and the files are released as {releases}/{dataset}/{version}/.
    With dp_epsilon set (CORRIDORHUB_DP_EPSILON: epsilon per device-day of the four aggregate datasets
    together), counts and means get differential-privacy noise, cells are chosen on noisy values only,
    and each release charges its dataset's share on the days it publishes first to one ledger for all
    datasets ({releases}/privacy-ledger.json); a day over dp_budget_epsilon is refused before any work.
    A failure leaves no partial release (under DP, a build that drew noise is charged even when it
    publishes nothing).  Every release is recorded in {releases}/release-log.json: a version name is
    never reused, a day whose release folders were deleted is refused until they are restored, and a
    day takes one mode (exact or DP) for every dataset.  See docs/PRIVACY.md.
    """
    if all_datasets == bool(dataset_ids):
        raise click.UsageError("Give --dataset ID (repeatable) or --all")
    if date_from is None:
        raise click.UsageError("Give --from DATE (and --to DATE for more than one day)")
    for dataset_id in dataset_ids:
        dataset_entry(dataset_id)  # UnknownDataset, naming the choices (or why a dataset was withdrawn)
    date_to = date_to or date_from
    if date_from > date_to:
        raise BadDateRange(f"The date range is reversed: --from {date_from} is after --to {date_to}")
    settings = settings_from(ctx, lake=lake, releases=releases)
    chosen = list(dataset_ids) or default_ids(settings)
    if not dataset_ids:
        for left_out in sorted(set(default_ids()) - set(chosen)):
            click.echo(
                f"{left_out}: left out under differential privacy: {left_out_under_dp()[left_out]}", err=True
            )
    target = Lake(settings.lake)
    target.require()  # once, not once per dataset
    failures: list[str] = []
    started = datetime.now()
    with tqdm(
        total=len(chosen) * len(STEPS), unit="step", disable=not sys.stderr.isatty(), file=sys.stderr
    ) as bar:
        for position, dataset_id in enumerate(chosen):
            offset = position * len(STEPS)

            def progress(done: int, total: int, label: str, offset: int = offset) -> None:
                bar.set_description(label)
                bar.update(offset + done - bar.n)

            try:
                result = publish_release(
                    target, dataset_id, date_from, date_to, settings, progress=progress, csv_bom=csv_bom
                )
            except CorridorHubError as exc:
                if len(chosen) == 1:
                    raise
                failures.append(f"{dataset_id}: {exc}")
                bar.update(offset + len(STEPS) - bar.n)
                continue
            tqdm.write(result.describe(), file=sys.stdout)
    if failures:
        for line in failures:
            click.echo(f"Error: {line}", err=True)
        raise click.exceptions.Exit(1)
    elapsed = (datetime.now() - started).total_seconds()
    click.echo(f"Published {len(chosen)} dataset(s) in {elapsed:.1f} s", err=True)
