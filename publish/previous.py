"""What earlier releases of a dataset published: the days they cover and their rows, read from their files.

A release folder holds ``provenance.json`` (written by ``publish.release``: the JST date range, the rules,
when it was built and up to when it read the lake) and the Parquet file of its rows.  A day is published
once (``publish.closure``): :func:`first_publications` finds, for each day, the release that published it
first and its rows for that day, which every later release repeats byte for byte and the privacy gate
checks (docs/PRIVACY.md, "Closed days").
"""

from __future__ import annotations

import hashlib
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
    built_at: str = ""  # ISO 8601 UTC: orders releases (the first publication of a day)
    parameters: dict[str, Any] = field(default_factory=dict)  # the rules it was built with
    received_until: str | None = None  # what it read of the lake (None: a release older than the rule)

    def covers(self, day: date) -> bool:
        return self.date_from <= day <= self.date_to


@dataclass(frozen=True)
class FirstPublication:
    """The release that published a day first, and its rows for that day (spec column order)."""

    release: EarlierRelease
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class EarlierReleases:
    releases: tuple[EarlierRelease, ...] = ()
    key_columns: tuple[str, ...] = field(default=())

    def covering(self, day: date) -> list[EarlierRelease]:
        return [r for r in self.releases if r.covers(day)]

    def first_publications(self, time_index: int) -> dict[date, FirstPublication]:
        """For each day any release covers: the earliest release covering it and its rows of that day."""
        out: dict[date, FirstPublication] = {}
        for release in sorted(self.releases, key=lambda r: (r.built_at, r.folder.name)):
            day = release.date_from
            while day <= release.date_to:
                if day not in out:
                    rows = tuple(row for row in release.rows.values() if jst_day(row[time_index]) == day)
                    out[day] = FirstPublication(release, rows)
                day += timedelta(days=1)
        return out


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
            built_at = str(meta.get("built_at") or "")
            parameters = dict(meta.get("parameters") or {})
            received_until = meta.get("received_until")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PublishError(f"Cannot read the date range of earlier release {folder.name}: {exc}") from exc
        try:
            rows = read_release_rows(folder, spec, key_columns)
        except (OSError, pa.ArrowException) as exc:
            raise PublishError(f"Cannot read the rows of earlier release {folder.name}: {exc}") from exc
        releases.append(
            EarlierRelease(folder, date_from, date_to, rows, built_at, parameters, received_until)
        )
    return EarlierReleases(tuple(releases), tuple(key_columns))


def check_intact(folder: Path, manifest_sha256: str) -> None:
    """Refuse an earlier release whose files are not those its manifest.json lists, or whose manifest is
    not the one the release log recorded when the folder was placed (``manifest_sha256``; empty: none
    recorded).  A rewritten copy (a restored backup, say) would otherwise be repeated as published."""
    where = f"{folder.parent.name}/{folder.name}"
    manifest = folder / "manifest.json"
    try:
        raw = manifest.read_bytes()
        listed = json.loads(raw)["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PublishError(f"Earlier release {where} has no readable manifest.json: {exc}") from exc
    if manifest_sha256 and hashlib.sha256(raw).hexdigest() != manifest_sha256:
        raise PublishError(
            f"Earlier release {where}: manifest.json is not the one published (its sha256 differs from the "
            "release log's); restore the folder from a true backup before publishing"
        )
    for item in listed:
        path = folder / str(item["path"])
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise PublishError(f"Earlier release {where}: cannot read {item['path']}: {exc}") from exc
        if digest != item["sha256"]:
            raise PublishError(
                f"Earlier release {where}: {item['path']} does not match its sha256 in manifest.json (the "
                "file was changed after publication); restore the folder from a true backup before publishing"
            )


def release_folders(dataset_dir: Path) -> list[Path]:
    """The version folders of a dataset (hidden entries, such as a release being written, excluded)."""
    if not dataset_dir.is_dir():
        return []
    return sorted(p for p in dataset_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
