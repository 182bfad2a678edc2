"""``build_dataset``: one dataset for a JST date range, aggregated, anonymized and described.

The dataset's registered builder does the work (``publish.cells`` for the aggregate datasets); this module
checks what every builder may assume: a known id, a range of at least one day, the dataset's own
preconditions (a privacy budget...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from pathlib import Path

from publish.datasets import BuildRequest, dataset_entry
from publish.errors import BadDateRange
from publish.model import BuiltDataset
from store.lake import Lake
from store.settings import Settings

#: The longest range one release may cover (a year): a guard against a typo in a year.
MAX_DAYS = 366


def check_range(date_from: date, date_to: date) -> None:
    if date_from > date_to:
        raise BadDateRange(
            f"The date range is reversed: --from {date_from} is after --to {date_to} (both JST, inclusive)"
        )
    if (date_to - date_from).days + 1 > MAX_DAYS:
        raise BadDateRange(
            f"The date range {date_from} to {date_to} holds {(date_to - date_from).days + 1} days; "
            f"one release covers at most {MAX_DAYS}"
        )


def check_preconditions(dataset_id: str, settings: Settings) -> None:
    """Refuse early, with the setting's name, what no build can do without."""
    entry = dataset_entry(dataset_id)
    if entry.preflight is not None:
        entry.preflight(settings)


def build_dataset(
    lake: Lake,
    dataset_id: str,
    date_from: date,
    date_to: date,
    settings: Settings,
    *,
    previous: Iterable[Path] = (),
    at_versions: Mapping[str, int] | None = None,
    received_until: datetime | None = None,
    day_cuts: Mapping[date, datetime] | None = None,
) -> BuiltDataset:
    """Build ``dataset_id`` for the JST days ``date_from`` .. ``date_to`` (inclusive).

    ``previous`` are the version folders of earlier releases of the same dataset: a day one of them
    published is repeated from the first of them, as it is.  ``at_versions`` reads those Delta table
    versions instead of the latest (a rebuild); ``received_until`` reads only the samples received by then;
    ``day_cuts`` reads those days only up to their own cut (the day's one cut, ``publish.release_log``).
    Raises UnknownDataset, BadDateRange, NoData, UnsafeColumn, LakeError...
    """
    check_preconditions(dataset_id, settings)
    check_range(date_from, date_to)
    entry = dataset_entry(dataset_id)
    request = BuildRequest(
        lake=lake,
        spec=entry.spec,
        date_from=date_from,
        date_to=date_to,
        settings=settings,
        previous=tuple(sorted(Path(p) for p in previous)),
        at_versions=dict(at_versions) if at_versions is not None else None,
        received_until=received_until,
        day_cuts=dict(day_cuts) if day_cuts else None,
    )
    return entry.builder(request)
