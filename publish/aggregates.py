"""The four aggregate datasets: their DuckDB queries, and their registration with rollups and derivations.

Each query returns every candidate cell (both mesh levels, or the per-day total next to each device type)
and the contributions of its leaves.  Values are rounded in SQL, and sums run over DECIMAL, so that a
rebuild from the same table versions gives the same bytes whatever order DuckDB's threads add in.
"""

from __future__ import annotations

import functools
from typing import Any

import duckdb
import pyarrow as pa

from publish._registry import BuildRequest, Rollup, Use, derive, register
from publish._specs import (
    ALL_TYPES,
    COARSE_MESH_LEVEL,
    FLEET_ACTIVITY,
    MESH_LEVEL,
    NETWORK_QUALITY,
    OUTSIDE_ZONES,
    SAFETY_EVENTS,
    TRAFFIC_SPEED,
)
from publish.anonymize import CellIndex
from publish.cells import Candidates, Query, build_aggregate
from store.geo import DIGITS, mesh_level
from store.lake import fetch_arrow
from store.views import TRIP_GAP_S

_DEVICE = "operator || '/' || device_id"
_JST_DAY = "CAST(timezone('Asia/Tokyo', ts) AS DATE)"
_DROP_DIGITS = 10 ** (DIGITS[MESH_LEVEL] - DIGITS[COARSE_MESH_LEVEL])


def _mesh_parent(code: Any) -> Any:
    return int(code) // _DROP_DIGITS if mesh_level(int(code)) == MESH_LEVEL else None


def _total_parent(value: Any) -> Any:
    return ALL_TYPES if value != ALL_TYPES else None


def _both_levels(bucket: str, base: str, measures: str) -> str:
    """Cells at 250 m and 1 km from the CTE ``s`` (columns ``t``, ``m5``, ``m3``, device, operator ...)."""
    return f"""WITH s AS ({base})
SELECT t AS {bucket}, coalesce(m5, m3) AS mesh_code,
       CAST(CASE WHEN m5 IS NOT NULL THEN {MESH_LEVEL} ELSE {COARSE_MESH_LEVEL} END AS TINYINT) AS mesh_level,
       count(*) AS samples, count(DISTINCT device) AS devices, {measures}
FROM s GROUP BY GROUPING SETS ((t, m5), (t, m3))"""


def _leaves(bucket: str, base: str) -> str:
    return f"""WITH s AS ({base})
SELECT t AS {bucket}, m5 AS mesh_code, device, operator, CAST(count(*) AS DOUBLE) AS weight
FROM s GROUP BY ALL ORDER BY ALL"""


def _mesh_base(table: str, bucket_sql: str, columns: str, where: str = "true") -> str:
    return f"""SELECT {bucket_sql} AS t, jis_mesh(lat, lon, {MESH_LEVEL}) AS m5,
           jis_mesh(lat, lon, {MESH_LEVEL}) // {_DROP_DIGITS} AS m3,
           {_DEVICE} AS device, operator, {columns}
    FROM {table} WHERE jis_mesh(lat, lon, {MESH_LEVEL}) IS NOT NULL AND {where}"""


_NETWORK_MEASURES = (("rsrp_dbm", 1), ("sinr_db", 1), ("rtt_ms", 1), ("dl_mbps", 2), ("ul_mbps", 2))
_NETWORK_QUANTILES = (("p10", 0.1), ("median", 0.5), ("p90", 0.9))


def network_quality(con: duckdb.DuckDBPyConnection, request: BuildRequest) -> Candidates:
    base = _mesh_base("network", "date_trunc('hour', ts)", "rat, rsrp_dbm, sinr_db, rtt_ms, dl_mbps, ul_mbps")
    quantiles = ", ".join(
        f"round(quantile_cont({m}, {q}), {digits}) AS {m}_{label}"
        for m, digits in _NETWORK_MEASURES
        for label, q in _NETWORK_QUANTILES
    )
    share = "round(avg(CASE WHEN rat IN ('NR_SA', 'NR_NSA') THEN 1.0 WHEN rat IS NOT NULL THEN 0.0 END), 4)"
    con.execute(f"CREATE OR REPLACE TEMP TABLE mesh_base AS {base}")
    base = "SELECT * FROM mesh_base"
    cells = fetch_arrow(con, _both_levels("hour_start", base, f"{quantiles}, {share} AS nr_share"))
    # Each percentile is over the samples that carry its measure, nr_share over those with a known rat:
    # per leaf and device, how many values it gave (publish.cells.withhold_statistics checks them).
    counts = ", ".join(f"count({m}) AS {m}" for m in (*(m for m, _ in _NETWORK_MEASURES), "rat"))
    populations = fetch_arrow(
        con,
        f"SELECT t AS hour_start, m5 AS mesh_code, device, operator, {counts} FROM mesh_base "
        "GROUP BY ALL ORDER BY ALL",
    )
    population_of = {f"{m}_{label}": m for m, _ in _NETWORK_MEASURES for label, _ in _NETWORK_QUANTILES}
    population_of["nr_share"] = "rat"
    return Candidates(
        cells,
        fetch_arrow(con, _leaves("hour_start", base)),
        populations=populations,
        population_of=population_of,
    )


def traffic_speed(con: duckdb.DuckDBPyConnection, request: BuildRequest) -> Candidates:
    base = _mesh_base(
        "state", "time_bucket(INTERVAL 15 MINUTE, ts)", "speed_mps", where="speed_mps IS NOT NULL"
    )
    measures = (
        "round(CAST(sum(CAST(speed_mps AS DECIMAL(18, 6))) AS DOUBLE) / count(*) * 3.6, 2) "
        "AS mean_speed_kmh, "
        "round(quantile_cont(speed_mps, 0.85) * 3.6, 2) AS p85_speed_kmh"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE mesh_base AS {base}")
    base = "SELECT * FROM mesh_base"
    cells = fetch_arrow(con, _both_levels("slot_start", base, measures))
    return Candidates(cells, fetch_arrow(con, _leaves("slot_start", base)))


_EVENTS = f"""SELECT {_JST_DAY} AS day_jst, coalesce(zone, zone_at(lat, lon), '{OUTSIDE_ZONES}') AS zone,
       kind, {_DEVICE} AS device, operator FROM event"""

# Distance driven in autonomous mode per zone, day and device: steps between consecutive positions of a
# device at most TRIP_GAP_S apart, counted where the later sample is (its zone, its day, its mode).
_AUTONOMOUS_KM = f"""WITH st AS (
    SELECT operator, device_id, ts, lat, lon, mode,
           coalesce(zone, zone_at(lat, lon), '{OUTSIDE_ZONES}') AS zone
    FROM state WHERE lat IS NOT NULL AND lon IS NOT NULL),
steps AS (
    SELECT *, lag(ts) OVER w AS prev_ts, lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon
    FROM st WINDOW w AS (PARTITION BY operator, device_id ORDER BY ts))
SELECT {_JST_DAY} AS day_jst, zone, {_DEVICE} AS device, operator,
       round(sum(haversine_m(prev_lat, prev_lon, lat, lon)), 3) AS weight
FROM steps
WHERE mode = 'autonomous' AND prev_ts IS NOT NULL
  AND epoch_us(ts) - epoch_us(prev_ts) <= {TRIP_GAP_S} * 1000000
GROUP BY ALL ORDER BY ALL"""


def safety_events(con: duckdb.DuckDBPyConnection, request: BuildRequest) -> Candidates:
    settings = request.settings
    cells = fetch_arrow(
        con,
        f"""SELECT day_jst, zone, kind, count(*) AS events, count(DISTINCT device) AS devices
        FROM ({_EVENTS}) GROUP BY ALL ORDER BY ALL""",
    )
    leaves = fetch_arrow(
        con,
        f"""SELECT day_jst, zone, kind, device, operator, CAST(count(*) AS DOUBLE) AS weight
        FROM ({_EVENTS}) GROUP BY ALL ORDER BY ALL""",
    )
    distance = fetch_arrow(con, _AUTONOMOUS_KM)
    keys = ("day_jst", "zone")
    index = CellIndex(distance, keys, None, settings.publish_k, settings.publish_dominance)
    km = {leaf: sum(w for _, w in sorted(devices.values())) / 1000 for leaf, devices in index.leaves.items()}
    rates = []
    for day, zone, events in zip(
        *(cells.column(c).to_pylist() for c in ("day_jst", "zone", "events")), strict=True
    ):
        leaf = (day, zone)
        ok = leaf in km and km[leaf] > 0 and index.failure({leaf}) is None
        rates.append(round(events / (km[leaf] / 100), 3) if ok else None)
    cells = cells.append_column("events_per_100km_autonomous", pa.array(rates, pa.float64()))
    return Candidates(cells, leaves, distance, keys)


_DEVICE_DAYS = f"""WITH typed AS (
    SELECT operator, device_id, {_JST_DAY} AS day_jst, coalesce(device_type, 'other') AS device_type,
           count(*) AS n
    FROM state GROUP BY ALL),
dtype AS (
    SELECT operator, device_id, day_jst, first(device_type ORDER BY n DESC, device_type) AS device_type
    FROM typed GROUP BY ALL),
modes AS (
    SELECT operator, device_id, {_JST_DAY} AS day_jst,
           count(*) FILTER (WHERE mode = 'autonomous') AS autonomous_n,
           count(*) FILTER (WHERE mode IS NOT NULL AND mode <> 'stopped') AS moded_n
    FROM state GROUP BY ALL)
SELECT d.day_jst, t.device_type, d.operator || '/' || d.device_id AS device, d.operator,
       CAST(round(d.distance_m, 3) AS DECIMAL(18, 3)) AS distance_m,
       CAST(round(d.active_time_s, 3) AS DECIMAL(18, 3)) AS active_time_s, m.autonomous_n, m.moded_n
FROM device_day d
JOIN dtype t USING (operator, device_id, day_jst)
JOIN modes m USING (operator, device_id, day_jst)"""


def fleet_activity(con: duckdb.DuckDBPyConnection, request: BuildRequest) -> Candidates:
    con.execute(f"CREATE OR REPLACE TEMP TABLE device_days AS {_DEVICE_DAYS}")
    cells = fetch_arrow(
        con,
        f"""WITH p AS (SELECT * FROM device_days)
        SELECT day_jst,
               CASE WHEN grouping(device_type) = 1 THEN '{ALL_TYPES}' ELSE device_type END AS device_type,
               count(DISTINCT device) AS active_devices,
               round(CAST(sum(distance_m) AS DOUBLE) / 1000, 3) AS distance_km,
               round(CAST(sum(active_time_s) AS DOUBLE) / 3600, 3) AS operating_hours,
               round(sum(autonomous_n) / nullif(sum(moded_n), 0), 4) AS autonomous_share
        FROM p GROUP BY GROUPING SETS ((day_jst, device_type), (day_jst))""",
    )
    leaves = fetch_arrow(
        con,
        """WITH p AS (SELECT * FROM device_days)
        SELECT day_jst, device_type, device, operator, CAST(distance_m AS DOUBLE) AS weight
        FROM p ORDER BY ALL""",
    )
    return Candidates(cells, leaves)


def _mesh_derivations(table: str, time_column: str) -> dict[str, Any]:
    position = derive(Use.SPACE_CELL, f"{table}.lat", f"{table}.lon")
    return {
        time_column: derive(Use.TIME_BUCKET, f"{table}.ts"),
        "mesh_code": position,
        "mesh_level": position,
        "samples": derive(Use.COUNT),
        "devices": derive(Use.COUNT_DISTINCT, f"{table}.device_id"),
    }


def _register(spec: Any, query: Query, **fields: Any) -> None:
    register(spec, functools.partial(build_aggregate, query=query), aggregate=True, **fields)


_mesh_rollup = Rollup("mesh_code", _mesh_parent)
_register(
    NETWORK_QUALITY,
    network_quality,
    key_columns=("hour_start", "mesh_code"),
    time_column="hour_start",
    rollup=_mesh_rollup,
    derivations={
        **_mesh_derivations("network", "hour_start"),
        **{
            f"{m}_{q}": derive(Use.STATISTIC, f"network.{m}")
            for m in ("rsrp_dbm", "sinr_db", "rtt_ms", "dl_mbps", "ul_mbps")
            for q in ("p10", "median", "p90")
        },
        "nr_share": derive(Use.STATISTIC, "network.rat"),
    },
)
_register(
    TRAFFIC_SPEED,
    traffic_speed,
    key_columns=("slot_start", "mesh_code"),
    time_column="slot_start",
    rollup=_mesh_rollup,
    derivations={
        **_mesh_derivations("state", "slot_start"),
        "mean_speed_kmh": derive(Use.STATISTIC, "state.speed_mps"),
        "p85_speed_kmh": derive(Use.STATISTIC, "state.speed_mps"),
    },
)
_travel = derive(Use.TRAVEL, "state.lat", "state.lon", "state.ts")
_register(
    SAFETY_EVENTS,
    safety_events,
    key_columns=("day_jst", "zone", "kind"),
    time_column="day_jst",
    derivations={
        "day_jst": derive(Use.TIME_BUCKET, "event.ts"),
        "zone": derive(Use.SPACE_CELL, "event.zone", "event.lat", "event.lon"),
        "kind": derive(Use.AS_IS, "event.kind"),
        "events": derive(Use.COUNT),
        "devices": derive(Use.COUNT_DISTINCT, "event.device_id"),
        "events_per_100km_autonomous": derive(Use.COUNT) + _travel + derive(Use.STATISTIC, "state.mode"),
    },
)
_register(
    FLEET_ACTIVITY,
    fleet_activity,
    key_columns=("day_jst", "device_type"),
    time_column="day_jst",
    rollup=Rollup("device_type", _total_parent),
    derivations={
        "day_jst": derive(Use.TIME_BUCKET, "state.ts"),
        "device_type": derive(Use.AS_IS, "state.device_type"),
        "active_devices": derive(Use.COUNT_DISTINCT, "state.device_id"),
        "distance_km": _travel,
        "operating_hours": _travel + derive(Use.STATISTIC, "state.speed_mps", "state.mode"),
        "autonomous_share": derive(Use.STATISTIC, "state.mode"),
    },
)

__all__ = ["fleet_activity", "network_quality", "safety_events", "traffic_speed"]
