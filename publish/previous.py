"""What earlier releases of a dataset published: the days they cover and their rows, read from their files.

A release folder holds ``provenance.json`` (written by ``publish.release``: the JST date range) and the
Parquet file of its rows.  Both the anonymizer and the privacy gate read them, so that a new release never
publishes, for a day an earlier release covers, a row that the earlier one did not publish identically
(see docs/PRIVACY.md, "Earlier releases").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from publish.errors import PublishError
from publish.model import DatasetSpec

PROVENANCE = "provenance.json"
_JST = timedelta(hours=9)

Key = tuple[Any, ...]


def jst_day(value: Any) -> date:
    """The Japan-time day of a published time value (a UTC instant, or already a date)."""
    if isinstance(value, datetime):
        return (value + _JST).date() if value.tzinfo is not None else value.date()
    if isinstance(value, date):
        return value
    raise PublishError(f"not a time value: {value!r}")


@dataclass(frozen=True)
class EarlierRelease:
    folder: Path
    date_from: date
    date_to: date
    rows: dict[Key, tuple[Any, ...]]  # key columns -> the whole row in spec column order

    def covers(self, day: date) -> bool:
        return self.date_from <= day <= self.date_to


@dataclass(frozen=True)
class EarlierReleases:
    releases: tuple[EarlierRelease, ...] = ()
    key_columns: tuple[str, ...] = field(default=())

    def covering(self, day: date) -> list[EarlierRelease]:
        return [r for r in self.releases if r.covers(day)]

    def allows(self, key: Key, row: tuple[Any, ...], day: date) -> bool:
        """Whether ``row`` may be published: every earlier release covering ``day`` published it as is."""
        return all(r.rows.get(key) == row for r in self.covering(day))


def data_file(folder: Path, spec: DatasetSpec) -> Path:
    """The Parquet file of a release folder that holds the dataset's columns."""
    wanted = {c.name for c in spec.columns}
    for path in sorted(folder.glob("*.parquet")):
        if wanted <= set(pq.read_schema(path).names):
            return path
    raise PublishError(f"Earlier release {folder} has no Parquet file with the columns of {spec.id}")


def read_release_rows(
    folder: Path, spec: DatasetSpec, key_columns: Sequence[str]
) -> dict[Key, tuple[Any, ...]]:
    table = pq.read_table(data_file(folder, spec), columns=[c.name for c in spec.columns])
    return rows_by_key(table, key_columns)


def rows_by_key(table: pa.Table, key_columns: Sequence[str]) -> dict[Key, tuple[Any, ...]]:
    columns = [table.column(name).to_pylist() for name in table.column_names]
    index = [table.column_names.index(k) for k in key_columns]
    rows = list(zip(*columns, strict=True)) if columns else []
    return {tuple(row[i] for i in index): tuple(row) for row in rows}


def read_earlier(folders: Iterable[Path], spec: DatasetSpec, key_columns: Sequence[str]) -> EarlierReleases:
    """Read each folder's date range and rows; a folder that cannot be read is an error, never skipped."""
    releases = []
    for folder in sorted(Path(f) for f in folders):
        try:
            meta = json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
            date_from = date.fromisoformat(meta["date_from"])
            date_to = date.fromisoformat(meta["date_to"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PublishError(f"Cannot read the date range of earlier release {folder}: {exc}") from exc
        try:
            rows = read_release_rows(folder, spec, key_columns)
        except (OSError, pa.ArrowException) as exc:
            raise PublishError(f"Cannot read the rows of earlier release {folder}: {exc}") from exc
        releases.append(EarlierRelease(folder, date_from, date_to, rows))
    return EarlierReleases(tuple(releases), tuple(key_columns))


def release_folders(dataset_dir: Path) -> list[Path]:
    """The version folders of a dataset (hidden entries, such as a release being written, excluded)."""
    if not dataset_dir.is_dir():
        return []
    return sorted(p for p in dataset_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
