"""trajectories-sample against a real lake of hand-made trips whose geometry is known.

Three devices drive the same 2.7 km eastward route (lat 35.552, lon 139.735 -> 139.765) at 10 m/s, one
sample a second, around 09:00 JST on two days; a privacy zone covers the middle of the route.  So every
published point can be checked against the true trip ends and the zone.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.csv as pacsv
import pytest

import publish.datasets as datasets
from publish.model import BuiltDataset
from publish.reid import check_trajectories, quasi_identifiers, reidentification_risk
from publish.trajectories import (
    GRID_DEG,
    TIME_STEP_S,
    TRAJECTORIES_SPEC,
    build_trajectories,
    pseudonym,
)
from store.errors import ConfigError
from store.geo import PrivacyZones
from store.lake import Lake
from store.schema import SCHEMAS
from store.settings import Settings

SECRET = "correct-horse-battery-staple-42"
LAT = 35.552
LON_START, LON_END = 139.735, 139.765
ZONE = (139.7490, 139.7510)  # west, east edge of the privacy zone across the route
DAYS = (date(2025, 6, 2), date(2025, 6, 3))
DEVICES = ("shuttle-01", "shuttle-02", "shuttle-03")
STEP_DEG = 10 / (111_320 * np.cos(np.radians(LAT)))  # 10 m of longitude


def _trip(device: str, start: datetime) -> pa.Table:
    lon = np.arange(LON_START, LON_END, STEP_DEG)
    n = len(lon)
    ts = [start + timedelta(seconds=i) for i in range(n)]
    schema = SCHEMAS["state"].arrow
    columns = {f.name: pa.nulls(n, f.type) for f in schema}
    columns.update(
        operator=pa.array(["hic"] * n),
        device_id=pa.array([device] * n),
        ts=pa.array(ts, schema.field("ts").type),
        seq=pa.array(range(n), pa.int64()),
        device_type=pa.array(["shuttle"] * n),
        lat=pa.array(LAT + np.sin(np.arange(n) / 7) * 2e-5),  # a little wobble: not on the grid
        lon=pa.array(lon),
        speed_mps=pa.array([10.0] * n),
        mode=pa.array(["autonomous"] * n),
        received_at=pa.array(ts, schema.field("received_at").type),
        date=pa.array([t.date() for t in ts], pa.date32()),
    )
    return pa.table(columns, schema=schema)


def _starts(day: date, device_index: int) -> datetime:
    # 09:05 JST + 7 minutes per device: same JST hour, separate in time.
    return datetime(day.year, day.month, day.day, 0, 5, 13, tzinfo=UTC) + timedelta(minutes=7 * device_index)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("lake"))
    lake.ensure_tables()
    for day in DAYS:
        lake.append("state", pa.concat_tables([_trip(d, _starts(day, i)) for i, d in enumerate(DEVICES)]))
    return lake


@pytest.fixture(scope="module")
def zones_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    west, east = ZONE
    ring = [[west, 35.549], [east, 35.549], [east, 35.555], [west, 35.555], [west, 35.549]]
    body = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "depot"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        ],
    }
    path = tmp_path_factory.mktemp("zones") / "privacy.geojson"
    path.write_text(json.dumps(body))
    return path


@pytest.fixture(scope="module")
def settings(lake: Lake, zones_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        lake=lake.root if isinstance(lake.root, Path) else Path(str(lake.root)),
        releases=tmp_path_factory.mktemp("releases"),
        pseudonym_secret=SECRET,
        privacy_zones_file=zones_file,
        publish_k=2,
        trip_trim_m=200.0,
    )


@pytest.fixture(scope="module")
def built(lake: Lake, settings: Settings) -> BuiltDataset:
    return build_trajectories(lake, DAYS[0], DAYS[1], settings)


def _metres(lat1: np.ndarray, lon1: np.ndarray, lat2: float, lon2: float) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return np.asarray(2 * 6_371_008.8 * np.arcsin(np.sqrt(h)), np.float64)


def test_builds_the_spec_columns_with_trips_on_both_days(built: BuiltDataset) -> None:
    table = built.table
    assert table.schema == TRAJECTORIES_SPEC.schema
    assert table.num_rows > 0
    qi = quasi_identifiers(table)
    # 3 devices x 2 days, each trip cut in two by the zone.
    assert qi.num_rows == 12
    assert sorted(set(qi["day_jst"].to_pylist())) == list(DAYS)
    assert built.source_versions["state"] >= 0
    assert built.privacy.cells_published == 12


def test_trip_ends_trimmed(built: BuiltDataset, settings: Settings) -> None:
    lat = built.table["lat"].to_numpy()
    lon = built.table["lon"].to_numpy()
    for true_lon in (LON_START, LON_END - STEP_DEG):
        assert _metres(lat, lon, LAT, true_lon).min() >= settings.trip_trim_m


def test_privacy_zone_empty_and_its_edges_trimmed(built: BuiltDataset, settings: Settings) -> None:
    lat = built.table["lat"].to_numpy()
    lon = built.table["lon"].to_numpy()
    assert settings.privacy_zones_file is not None
    zones = PrivacyZones.from_geojson(settings.privacy_zones_file)
    assert not zones.contains(lat, lon).any()
    # Nothing published within the trim distance of where the trips entered or left the zone.
    for edge in ZONE:
        assert _metres(lat, lon, LAT, edge).min() >= settings.trip_trim_m


def test_pseudonyms_stable_within_a_day_and_different_across_days(built: BuiltDataset) -> None:
    qi = quasi_identifiers(built.table)
    by_day: dict[date, set[str]] = {}
    for day, name in zip(qi["day_jst"].to_pylist(), qi["pseudonym"].to_pylist(), strict=True):
        by_day.setdefault(day, set()).add(name)
    # Within a day: one pseudonym per device (both segments of a trip share it).
    assert [len(by_day[d]) for d in DAYS] == [3, 3]
    assert by_day[DAYS[0]].isdisjoint(by_day[DAYS[1]])
    expected = {pseudonym(SECRET, d, "hic", dev) for d in DAYS for dev in DEVICES}
    assert by_day[DAYS[0]] | by_day[DAYS[1]] == expected
    assert pseudonym(SECRET, DAYS[0], "hic", "shuttle-01") != pseudonym(
        SECRET + "x", DAYS[0], "hic", "shuttle-01"
    )


def test_time_and_space_coarsened(built: BuiltDataset) -> None:
    micros = built.table["ts"].cast(pa.int64()).to_numpy()
    assert (micros % (TIME_STEP_S * 1_000_000) == 0).all()
    for name in ("lat", "lon"):
        steps = built.table[name].to_numpy() / GRID_DEG
        assert np.allclose(steps, np.round(steps), atol=1e-6)
    # One point per time step of a trip.
    keys = list(zip(*(built.table[c].to_pylist() for c in ("pseudonym", "trip_no", "ts")), strict=True))
    assert len(keys) == len(set(keys))


def test_the_secret_appears_nowhere(built: BuiltDataset, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    pacsv.write_csv(built.table, out)
    text = out.read_text() + json.dumps(built.privacy.as_dict(), default=str)
    text += json.dumps(built.parameters, default=str) + repr(built)
    assert SECRET not in text
    assert SECRET.encode().hex() not in text


def test_deterministic_rebuild(lake: Lake, settings: Settings, built: BuiltDataset) -> None:
    again = build_trajectories(lake, DAYS[0], DAYS[1], settings, at_versions=built.source_versions)
    assert again.table.equals(built.table)
    assert again.parameters == built.parameters


def test_missing_secret_is_a_clear_error(lake: Lake, settings: Settings) -> None:
    with pytest.raises(
        ConfigError, match="trajectories-sample needs a pseudonym secret.*CORRIDORHUB_PSEUDONYM_SECRET"
    ):
        build_trajectories(lake, DAYS[0], DAYS[1], replace(settings, pseudonym_secret=None))


def test_registered_as_opt_in_with_its_gate_check() -> None:
    entry = datasets.dataset_entry("trajectories-sample")
    assert entry.spec.opt_in
    assert "trajectories-sample" not in datasets.default_ids()
    assert check_trajectories in datasets.GATE_CHECKS["trajectories-sample"]


def test_classes_below_k_are_suppressed(lake: Lake, settings: Settings) -> None:
    strict = build_trajectories(lake, DAYS[0], DAYS[1], replace(settings, publish_k=4))
    assert strict.table.num_rows == 0
    assert strict.privacy.cells_suppressed_k == 12


def test_reidentification_check_passes_a_safe_output(built: BuiltDataset, settings: Settings) -> None:
    assert check_trajectories(built, settings) == []
    report = reidentification_risk(built.table, k=settings.publish_k)
    assert report.k_devices == 3
    assert report.max_risk == pytest.approx(1 / 3)
    assert report.library.startswith("pycanon")
    assert built.privacy.extra["reidentification"]["k_devices"] == 3


def test_reidentification_check_fails_a_crafted_unsafe_output(
    built: BuiltDataset, settings: Settings
) -> None:
    # One device's trip moved to another hour: its class holds one device only.
    table = built.table
    first = table["pseudonym"][0].as_py()
    ts = table["ts"].cast(pa.int64()).to_numpy().copy()
    mine = np.array([p == first for p in table["pseudonym"].to_pylist()])
    ts[mine] += 3 * 3600 * 1_000_000
    unsafe = table.set_column(table.column_names.index("ts"), "ts", pa.array(ts).cast(table["ts"].type))
    crafted = replace(built, table=unsafe, privacy=replace(built.privacy, extra={}))
    problems = check_trajectories(crafted, settings)
    assert len(problems) == 1
    assert "re-identification risk 1.000 above 1/2" in problems[0]
    # A device filling a class alone with copies of its trips counts as one device, not as several trips.
    copies = unsafe.filter(pa.array(mine))
    copies = copies.set_column(
        copies.column_names.index("trip_no"),
        "trip_no",
        pa.compute.add(copies["trip_no"], 10).cast(pa.int32()),
    )
    report = reidentification_risk(pa.concat_tables([unsafe, copies]), k=2)
    assert (report.k_trips, report.k_devices, report.max_risk) == (2, 1, 1.0)
    assert check_trajectories(replace(crafted, table=pa.concat_tables([unsafe, copies])), settings)
