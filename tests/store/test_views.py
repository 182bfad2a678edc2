"""The analyst views over a real lake (Delta tables in tmp_path) with hand-made rows of known answers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from store.geo import assign_zone, jis_mesh
from store.lake import Lake
from store.schema import SCHEMAS
from store.views import VIEWS, create_analyst_views, render_views_doc

ROOT = Path(__file__).resolve().parents[2]
# 23:50 JST on 14 March: the drive below crosses midnight in Japan (15:00 UTC) during its stop.
T0 = datetime(2025, 3, 14, 14, 50, tzinfo=UTC)
LAT0, LON0 = 35.5480, 139.7400
DEG_PER_100M = 100 / (6_371_008.8 * math.pi / 180)  # 100 m along a meridian, on the haversine sphere
T1, HIC = (35.549, 139.785), (35.547, 139.751)


def rows(stream: str, records: list[dict[str, Any]], *, zone: bool = False) -> pa.Table:
    schema = SCHEMAS[stream].arrow
    columns = {}
    for f in schema:
        values = [r.get(f.name) for r in records]
        if f.name == "date":
            values = [r["ts"].date() for r in records]
        columns[f.name] = pa.array(values, f.type)
    table = pa.table(columns, schema=schema)
    if zone:
        lat = [math.nan if r.get("lat") is None else r["lat"] for r in records]
        lon = [math.nan if r.get("lon") is None else r["lon"] for r in records]
        table = table.set_column(schema.get_field_index("zone"), "zone", assign_zone(lat, lon))
    return table


def state(
    t_s: float, lat: float, speed: float, mode: str, *, device: str = "shuttle-01", **kw: Any
) -> dict[str, Any]:
    record = {
        "operator": kw.pop("operator", "hic"),
        "device_id": device,
        "ts": T0 + timedelta(seconds=t_s),
        "lat": lat,
        "lon": kw.pop("lon", LON0),
        "speed_mps": speed,
        "mode": mode,
    }
    return record | kw


def drive() -> list[dict[str, Any]]:
    """Trip 1: 1 km in 100 s; a 10-minute stop; trip 2: 2 km with a 20 s halt; silence; trip 3: 40 m."""
    out = [state(10 * i, LAT0 + i * DEG_PER_100M, 10.0, "autonomous") for i in range(11)]
    stop_lat = LAT0 + 10 * DEG_PER_100M
    out += [state(110 + 10 * i, stop_lat, 0.0, "stopped") for i in range(61)]  # t = 110 .. 710 s
    position = 0
    for i in range(23):  # t = 720 .. 940 s; samples 10-12 halt at a traffic light (0.2 m/s, 20 s)
        if i not in (11, 12):
            position += i > 0
        mode = "manual" if i < 7 else "autonomous"
        speed = 0.2 if i in (10, 11, 12) else 10.0
        out.append(state(720 + 10 * i, stop_lat + position * DEG_PER_100M, speed, mode))
    end_lat = stop_lat + position * DEG_PER_100M
    out += [state(1540 + i, end_lat + i * DEG_PER_100M / 10, 10.0, "manual") for i in range(5)]
    return out


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    lake = Lake(tmp_path_factory.mktemp("lake"))
    lake.ensure_tables()
    lake.append("state", rows("state", drive()))
    other = [state(i, LAT0, 3.0, "autonomous", device="bus-7", operator="keikyu-bus") for i in range(3)]
    lake.append("state", rows("state", other))
    # Speed near Tokyo station, away from the drive: 14:59:57-15:00:00 UTC straddles a 15-minute slot.
    tokyo = [state(597 + i, 35.6812, float(i + 1), "manual", device="car-1", lon=139.7671) for i in range(5)]
    lake.append("state", rows("state", tokyo))
    lake.append("network", rows("network", network_samples()))
    lake.append("event", rows("event", event_samples(), zone=True))
    connection = lake.connect()
    create_analyst_views(connection)
    yield connection
    connection.close()


def network_samples() -> list[dict[str, Any]]:
    cell_a = [
        (-100, "NR_SA", "a"),
        (-90, "NR_SA", "b"),
        (-80, "LTE", "a"),
        (-70, "NR_NSA", "a"),
        (-60, None, "b"),
    ]
    out = [
        {
            "operator": "hic",
            "device_id": device,
            "ts": T0 + timedelta(minutes=5, seconds=i),
            "lat": T1[0],
            "lon": T1[1],
            "rsrp_dbm": float(rsrp),
            "sinr_db": float(10 + i),
            "rat": rat,
        }
        for i, (rsrp, rat, device) in enumerate(cell_a)
    ]
    out.append(
        {
            "operator": "hic",
            "device_id": "a",
            "ts": T0 + timedelta(minutes=20),
            "lat": HIC[0],
            "lon": HIC[1],
            "rsrp_dbm": -95.0,
            "rat": "LTE",
        }
    )
    out.append({"operator": "hic", "device_id": "a", "ts": T0, "lat": None, "lon": None, "rsrp_dbm": -50.0})
    return out


def event_samples() -> list[dict[str, Any]]:
    def event(minutes: float, kind: str, where: tuple[float, float] | None) -> dict[str, Any]:
        lat, lon = where or (None, None)
        return {
            "operator": "hic",
            "device_id": "a",
            "ts": T0 + timedelta(minutes=minutes),
            "kind": kind,
            "lat": lat,
            "lon": lon,
        }

    return [
        event(1, "disengagement", T1),
        event(2, "disengagement", T1),
        event(3, "disengagement", T1),
        event(20, "disengagement", T1),  # 00:10 JST on the 15th
        event(4, "obstacle", HIC),
        event(5, "obstacle", HIC),
        event(6, "obstacle", None),
        event(7, "obstacle", (35.60, 139.80)),
    ]


def fetch(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    result = con.execute(sql)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def test_every_view_has_exactly_its_declared_columns_and_types(con: duckdb.DuckDBPyConnection) -> None:
    for view in VIEWS:
        described = con.execute(f"DESCRIBE {view.name}").fetchall()
        assert [(r[0], r[1]) for r in described] == [(c.name, c.type) for c in view.columns], view.name
        assert view.description and all(c.description for c in view.columns)


def test_trips_split_on_a_long_stop_and_a_gap_with_exact_distances(con: duckdb.DuckDBPyConnection) -> None:
    trips = fetch(con, "SELECT * FROM trips WHERE device_id = 'shuttle-01' ORDER BY trip_no")
    assert [t["trip_no"] for t in trips] == [1, 2, 3]
    assert [t["distance_m"] for t in trips] == pytest.approx([1000.0, 2000.0, 40.0], abs=1e-6)
    assert [t["duration_s"] for t in trips] == [100.0, 220.0, 4.0]
    assert [t["samples"] for t in trips] == [11, 23, 5]
    assert trips[0]["start_ts"] == T0 and trips[0]["end_ts"] == T0 + timedelta(seconds=100)
    assert trips[1]["start_ts"] == T0 + timedelta(seconds=720)  # the traffic-light halt stays in trip 2
    assert [t["autonomous_share"] for t in trips] == pytest.approx([1.0, 16 / 23, 0.0])
    bus = fetch(con, "SELECT * FROM trips WHERE device_id = 'bus-7'")
    assert len(bus) == 1 and bus[0]["operator"] == "keikyu-bus" and bus[0]["distance_m"] == 0.0


def test_device_day_splits_at_japan_midnight_and_matches_trips(con: duckdb.DuckDBPyConnection) -> None:
    days = fetch(con, "SELECT * FROM device_day WHERE device_id = 'shuttle-01' ORDER BY day_jst")
    assert [d["day_jst"] for d in days] == [date(2025, 3, 14), date(2025, 3, 15)]
    first, second = days
    assert first["distance_m"] == pytest.approx(1000.0) and first["active_time_s"] == 100.0
    assert first["samples"] == 11 + 49  # the stop's samples before 15:00 UTC (00:00 JST) count on the 14th
    assert first["autonomous_share"] == 1.0
    assert second["distance_m"] == pytest.approx(2040.0) and second["active_time_s"] == 224.0
    assert second["samples"] == 12 + 23 + 5
    assert second["autonomous_share"] == pytest.approx(16 / 28)
    totals = fetch(
        con,
        "SELECT (SELECT sum(distance_m) FROM trips) AS trips,"
        " (SELECT sum(distance_m) FROM device_day) AS days",
    )[0]
    assert totals["trips"] == pytest.approx(totals["days"])


def test_network_quality_by_mesh_and_japan_hour(con: duckdb.DuckDBPyConnection) -> None:
    cells = fetch(con, "SELECT * FROM network_mesh_hour ORDER BY hour_jst")
    assert len(cells) == 2  # the sample without a position is left out
    a, b = cells
    assert a["mesh250"] == jis_mesh(*T1, 5) and b["mesh250"] == jis_mesh(*HIC, 5)
    assert a["hour_jst"] == datetime(2025, 3, 14, 23, 0) and b["hour_jst"] == datetime(2025, 3, 15, 0, 0)
    assert (a["samples"], a["devices"]) == (5, 2)
    assert (a["rsrp_dbm_p10"], a["rsrp_dbm_median"], a["rsrp_dbm_p90"]) == pytest.approx(
        (-96.0, -80.0, -64.0)
    )
    assert a["sinr_db_median"] == 12.0 and a["rtt_ms_median"] is None
    assert a["nr_share"] == pytest.approx(0.75)  # 3 of the 4 samples with a rat
    assert b["rsrp_dbm_median"] == -95.0 and b["nr_share"] == 0.0


def test_speed_by_mesh_and_japan_15_minutes(con: duckdb.DuckDBPyConnection) -> None:
    mesh = jis_mesh(35.6812, 139.7671, 5)
    slots = fetch(con, f"SELECT * FROM speed_mesh_15min WHERE mesh250 = {mesh} ORDER BY slot_jst")
    assert [s["slot_jst"] for s in slots] == [datetime(2025, 3, 14, 23, 45), datetime(2025, 3, 15, 0, 0)]
    assert [s["samples"] for s in slots] == [3, 2]  # 14:59:57, :58, :59 UTC, then 15:00:00 and :01
    assert slots[0]["mean_speed_mps"] == 2.0 and slots[0]["p85_speed_mps"] == pytest.approx(2.7)
    assert slots[1]["mean_speed_mps"] == 4.5 and slots[1]["devices"] == 1


def test_events_by_zone_japan_day_and_kind(con: duckdb.DuckDBPyConnection) -> None:
    counts = {
        (r["zone"], str(r["day_jst"]), r["kind"]): r["events"]
        for r in fetch(con, "SELECT * FROM events_zone_day")
    }
    assert counts == {
        ("haneda-t1", "2025-03-14", "disengagement"): 3,
        ("haneda-t1", "2025-03-15", "disengagement"): 1,
        ("hic", "2025-03-14", "obstacle"): 2,
        (None, "2025-03-14", "obstacle"): 2,  # one without a position, one in Tokyo Bay
    }


def test_events_without_a_zone_column_get_their_zone_in_sql(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables()
    lake.append("event", rows("event", event_samples(), zone=False))
    connection = lake.connect()
    create_analyst_views(connection)
    got = fetch(connection, "SELECT zone, sum(events) AS n FROM events_zone_day GROUP BY ALL ORDER BY zone")
    assert [(r["zone"], r["n"]) for r in got] == [("haneda-t1", 4), ("hic", 2), (None, 2)]


def test_docs_views_matches_the_declarations() -> None:
    committed = (ROOT / "docs" / "VIEWS.md").read_text(encoding="utf-8")
    assert committed == render_views_doc(), (
        "docs/VIEWS.md is stale: run `python -m store.views > docs/VIEWS.md`"
    )
    for view in VIEWS:
        assert f"## `{view.name}`" in committed
