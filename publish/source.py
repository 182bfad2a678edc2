"""What a build reads: the lake's committed snapshot, cut to a JST date range, without privacy-zone points.

:func:`open_source` gives a DuckDB connection whose views ``state``, ``event`` and ``network`` hold only
the samples whose ``ts`` falls in the range (Japan time, both ends inclusive), that the hub had received by
``received_until`` (``publish.closure``), and that do not lie in a privacy zone
(``settings.privacy_zones_file``; a point on a zone's edge counts as inside).  The analyst
views of ``store.views`` (``device_day`` ...), the ``jis_mesh`` macro and ``zone_at`` are created on top.
The Delta version read of each table is returned: it is the release's provenance, kept by the hub (not
published: :func:`record_source_versions`), and passing the same versions back (``at_versions``) rebuilds
from exactly the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from store.errors import LakeError
from store.geo import PrivacyZones
from store.lake import Lake, select_files
from store.schema import SCHEMAS, STREAMS
from store.settings import Settings
from store.views import create_analyst_views


@dataclass(frozen=True)
class Source:
    con: duckdb.DuckDBPyConnection
    versions: dict[str, int]  # Delta version read per stream table (-1: the table does not exist)
    privacy_zones: int  # number of privacy polygons applied

    def tables_read(self) -> str:
        """The versions read, in words: ``state at version 100, event at version 12, network not created
        yet``."""
        return ", ".join(
            f"{name} at version {version}" if version >= 0 else f"{name} not created yet"
            for name, version in self.versions.items()
        )


def jst_bounds(date_from: date, date_to: date) -> tuple[str, str]:
    """The UTC instants (as SQL literals) where JST ``date_from`` starts and JST ``date_to`` ends."""
    start = f"TIMESTAMPTZ '{date_from.isoformat()} 00:00:00+09:00'"
    end = f"TIMESTAMPTZ '{(date_to + timedelta(days=1)).isoformat()} 00:00:00+09:00'"
    return start, end


def _files_at(lake: Lake, name: str, version: int | None) -> tuple[int, tuple[str, ...], pa.Schema]:
    if version is None:
        if not lake.has_table(name):
            return -1, (), SCHEMAS[name].arrow
        snap = lake.snapshot(name)
        return snap.version, snap.files, snap.schema
    if version < 0:
        return -1, (), SCHEMAS[name].arrow
    try:  # a handle of our own: the lake's cached one must stay at the latest version
        table = DeltaTable(
            lake.table_uri(name), version=version, storage_options=lake.storage_options or None
        )
        return version, tuple(table.file_uris()), pa.schema(table.schema().to_arrow())
    except (DeltaError, OSError) as exc:
        raise LakeError(f"Cannot read version {version} of table {name!r} in {lake.root}: {exc}") from exc


def _install_privacy_zones(con: duckdb.DuckDBPyConnection, zones: PrivacyZones) -> str:
    """The SQL test 'this row is outside every privacy zone' (a vectorized Python function in DuckDB)."""

    def in_zone(lat: pa.ChunkedArray, lon: pa.ChunkedArray) -> pa.Array:
        lat_np = np.asarray(lat.to_numpy(zero_copy_only=False), np.float64)
        lon_np = np.asarray(lon.to_numpy(zero_copy_only=False), np.float64)
        return pa.array(zones.contains(lat_np, lon_np), pa.bool_())

    con.create_function(  # type: ignore[call-overload]  # the string forms work on duckdb 1.2 and 2.x
        "in_privacy_zone", in_zone, ["DOUBLE", "DOUBLE"], "BOOLEAN", type="arrow", null_handling="special"
    )
    bounds = [p.bounds for p in zones.polygons]  # (minx, miny, maxx, maxy) = (west, south, east, north)
    west, south = min(b[0] for b in bounds), min(b[1] for b in bounds)
    east, north = max(b[2] for b in bounds), max(b[3] for b in bounds)
    return (
        f"NOT coalesce(lat BETWEEN {south!r} AND {north!r} AND lon BETWEEN {west!r} AND {east!r}"
        " AND in_privacy_zone(lat, lon), false)"
    )


def open_source(
    lake: Lake,
    date_from: date,
    date_to: date,
    settings: Settings,
    *,
    at_versions: Mapping[str, int] | None = None,
    received_until: datetime | None = None,
    day_cuts: Mapping[date, datetime] | None = None,
) -> Source:
    """A connection over the committed snapshot (or ``at_versions``), cut to the range, zones removed,
    and (``received_until``) to what the hub had received by then: a day's rows are a function of those.
    ``day_cuts`` are the days another dataset published first, each read up to that day's cut."""
    con = lake.connect(views=False)  # LakeError, saying how a lake is made, when there is none
    con.execute("SET TimeZone = 'UTC'")
    zones = (
        PrivacyZones.from_geojson(settings.privacy_zones_file)
        if settings.privacy_zones_file is not None
        else None
    )
    outside = _install_privacy_zones(con, zones) if zones is not None and len(zones) else "true"
    start, end = jst_bounds(date_from, date_to)
    # JST day d runs from 15:00 UTC on d-1: the UTC partitions d-1 .. date_to hold the range.
    first, last = (date_from - timedelta(days=1)).isoformat(), date_to.isoformat()
    received = received_before(received_until, day_cuts or {})
    versions: dict[str, int] = {}
    for name in STREAMS:
        wanted = None if at_versions is None else at_versions.get(name, -1)
        version, files, schema = _files_at(lake, name, wanted)
        versions[name] = version
        con.execute(
            f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM ({select_files(files, schema)}) "
            f"WHERE date BETWEEN DATE '{first}' AND DATE '{last}' AND ts >= {start} AND ts < {end} "
            f"AND ({outside}) AND {received}"
        )
    create_analyst_views(con)
    return Source(con, versions, len(zones) if zones is not None else 0)


def _instant(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{moment.astimezone(UTC).isoformat()}'"


def received_before(received_until: datetime | None, day_cuts: Mapping[date, datetime]) -> str:
    """The SQL condition on ``received_at``: each day in ``day_cuts`` up to its own cut (the day's one
    cut, ``publish.release_log``), every other day up to ``received_until``."""
    default = f"received_at <= {_instant(received_until)}" if received_until is not None else "true"
    if not day_cuts:
        return f"(received_at IS NULL OR {default})"
    cases = " ".join(
        f"WHEN ts >= {start} AND ts < {end} THEN received_at <= {_instant(cut)}"
        for day, cut in sorted(day_cuts.items())
        for start, end in [jst_bounds(day, day)]
    )
    return f"(received_at IS NULL OR CASE {cases} ELSE {default} END)"


SOURCE_VERSIONS = Path("_hub") / "publish" / "source-versions"


def record_source_versions(lake: Lake, dataset_id: str, version: str, versions: Mapping[str, int]) -> Path:
    """Keep the Delta versions a release read in ``{lake}/_hub/publish/source-versions/{dataset}/{version}
    .json``, for the hub's operators and rebuilds (``at_versions``), not in the release: a later release's
    versions would count the commits (late data) made after an earlier one (docs/PRIVACY.md)."""
    path = Path(lake.root) / SOURCE_VERSIONS / dataset_id / f"{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(sorted(versions.items())), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_source_versions(lake: Lake, dataset_id: str, version: str) -> dict[str, int]:
    """The Delta versions release ``dataset_id/version`` read (see :func:`record_source_versions`)."""
    path = Path(lake.root) / SOURCE_VERSIONS / dataset_id / f"{version}.json"
    try:
        versions = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LakeError(f"No record of the Delta versions read by {dataset_id} {version} in {path}") from None
    return {str(k): int(v) for k, v in versions.items()}
