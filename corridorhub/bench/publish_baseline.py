"""The baseline of ``bench publish``: the bare DuckDB aggregation of the cells, ``COPY``-ed to Parquet.

One statement per aggregate dataset computes the same cells as ``publish.aggregates`` (the same GROUP BYs
and GROUPING SETS, the same statistics, rounding and DECIMAL sums, both mesh levels, the per-day total
next to each device type, the autonomous-km rate of ``safety-events``) and writes them with
``COPY (...) TO 'file.parquet' (FORMAT parquet, COMPRESSION zstd)``: no contributions query, no
suppression, no gate, no CSV, GeoJSON or metadata.  The SQL is a deliberate copy rather than an import of
the publisher's private query builders, so that the baseline stays the bare work even if the publisher
changes how it gets there; keep the two in step when a dataset's cells change.

The connection reads the same Parquet files as the publisher (the lake's committed snapshot), cut to the
same JST day, with the same macros and analyst views (``jis_mesh``, ``zone_at``, ``haversine_m``,
``device_day``) and DuckDB's default threads and memory, as the publisher's connection has.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import duckdb

from store.lake import Lake, select_files
from store.schema import SCHEMAS, STREAMS
from store.views import TRIP_GAP_S, create_analyst_views

_MESH = 5  # JIS 250 m, the finest published cell (publish._specs.MESH_LEVEL)
_COARSE = 3  # JIS 1 km, the level above it (publish._specs.COARSE_MESH_LEVEL)
_DROP = 100  # mesh code digits between the two levels
_DEVICE = "operator || '/' || device_id"
_JST_DAY = "CAST(timezone('Asia/Tokyo', ts) AS DATE)"


def _mesh_cells(table: str, bucket: str, bucket_sql: str, columns: str, measures: str, where: str) -> str:
    return f"""WITH s AS (
    SELECT {bucket_sql} AS t, jis_mesh(lat, lon, {_MESH}) AS m5, jis_mesh(lat, lon, {_MESH}) // {_DROP} AS m3,
           {_DEVICE} AS device, operator, {columns}
    FROM {table} WHERE jis_mesh(lat, lon, {_MESH}) IS NOT NULL AND {where})
SELECT t AS {bucket}, coalesce(m5, m3) AS mesh_code,
       CAST(CASE WHEN m5 IS NOT NULL THEN {_MESH} ELSE {_COARSE} END AS TINYINT) AS mesh_level,
       count(*) AS samples, count(DISTINCT device) AS devices, {measures}
FROM s GROUP BY GROUPING SETS ((t, m5), (t, m3)) ORDER BY {bucket}, mesh_code"""


_NETWORK_MEASURES = ", ".join(
    f"round(quantile_cont({m}, {q}), {digits}) AS {m}_{label}"
    for m, digits in (("rsrp_dbm", 1), ("sinr_db", 1), ("rtt_ms", 1), ("dl_mbps", 2), ("ul_mbps", 2))
    for label, q in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))
)
_NR_SHARE = "round(avg(CASE WHEN rat IN ('NR_SA', 'NR_NSA') THEN 1.0 WHEN rat IS NOT NULL THEN 0.0 END), 4)"

_SAFETY_EVENTS = f"""WITH ev AS (
    SELECT {_JST_DAY} AS day_jst, coalesce(zone, zone_at(lat, lon), 'outside') AS zone, kind,
           {_DEVICE} AS device
    FROM event),
cells AS (
    SELECT day_jst, zone, kind, count(*) AS events, count(DISTINCT device) AS devices FROM ev GROUP BY ALL),
st AS (
    SELECT operator, device_id, ts, lat, lon, mode, coalesce(zone, zone_at(lat, lon), 'outside') AS zone
    FROM state WHERE lat IS NOT NULL AND lon IS NOT NULL),
steps AS (
    SELECT *, lag(ts) OVER w AS prev_ts, lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon
    FROM st WINDOW w AS (PARTITION BY operator, device_id ORDER BY ts)),
km AS (
    SELECT {_JST_DAY} AS day_jst, zone, sum(haversine_m(prev_lat, prev_lon, lat, lon)) / 1000 AS km
    FROM steps
    WHERE mode = 'autonomous' AND prev_ts IS NOT NULL
      AND epoch_us(ts) - epoch_us(prev_ts) <= {TRIP_GAP_S} * 1000000
    GROUP BY ALL)
SELECT cells.*, round(events / (km / 100), 3) AS events_per_100km_autonomous
FROM cells LEFT JOIN km USING (day_jst, zone) ORDER BY day_jst, zone, kind"""

_FLEET_ACTIVITY = f"""WITH typed AS (
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
    FROM state GROUP BY ALL),
p AS (
    SELECT d.day_jst, t.device_type, d.operator || '/' || d.device_id AS device,
           CAST(round(d.distance_m, 3) AS DECIMAL(18, 3)) AS distance_m,
           CAST(round(d.active_time_s, 3) AS DECIMAL(18, 3)) AS active_time_s, m.autonomous_n, m.moded_n
    FROM device_day d
    JOIN dtype t USING (operator, device_id, day_jst)
    JOIN modes m USING (operator, device_id, day_jst))
SELECT day_jst, CASE WHEN grouping(device_type) = 1 THEN 'all' ELSE device_type END AS device_type,
       count(DISTINCT device) AS active_devices,
       round(CAST(sum(distance_m) AS DOUBLE) / 1000, 3) AS distance_km,
       round(CAST(sum(active_time_s) AS DOUBLE) / 3600, 3) AS operating_hours,
       round(sum(autonomous_n) / nullif(sum(moded_n), 0), 4) AS autonomous_share
FROM p GROUP BY GROUPING SETS ((day_jst, device_type), (day_jst)) ORDER BY day_jst, device_type"""

_TRIP_ZONE = "coalesce(s.zone, zone_at(s.lat, s.lon), 'outside')"
# trips-od: the zones of each trip's first and last sample (the day's trips: the connection holds one day).
_TRIPS_OD = f"""WITH ends AS (
    SELECT t.operator, t.device_id, t.start_ts,
           min({_TRIP_ZONE}) FILTER (WHERE s.ts = t.start_ts) AS origin_zone,
           min({_TRIP_ZONE}) FILTER (WHERE s.ts = t.end_ts) AS destination_zone
    FROM trips t JOIN state s
      ON s.operator = t.operator AND s.device_id = t.device_id AND s.ts IN (t.start_ts, t.end_ts)
    WHERE s.lat IS NOT NULL AND s.lon IS NOT NULL
    GROUP BY t.operator, t.device_id, t.start_ts),
e AS (SELECT CAST(timezone('Asia/Tokyo', start_ts) AS DATE) AS day_jst, origin_zone, destination_zone,
             operator || '/' || device_id AS device FROM ends)
SELECT day_jst, origin_zone,
       CASE WHEN grouping(destination_zone) = 1 THEN 'all' ELSE destination_zone END AS destination_zone,
       count(*) AS trips, count(DISTINCT device) AS devices
FROM e GROUP BY GROUPING SETS ((day_jst, origin_zone, destination_zone), (day_jst, origin_zone))"""

#: The bare aggregation of each aggregate dataset's cells, by dataset id.
BASELINE_SQL: dict[str, str] = {
    "network-quality-mesh": _mesh_cells(
        "network",
        "hour_start",
        "date_trunc('hour', ts)",
        "rat, rsrp_dbm, sinr_db, rtt_ms, dl_mbps, ul_mbps",
        f"{_NETWORK_MEASURES}, {_NR_SHARE} AS nr_share",
        "true",
    ),
    "traffic-speed-mesh": _mesh_cells(
        "state",
        "slot_start",
        "time_bucket(INTERVAL 15 MINUTE, ts)",
        "speed_mps",
        "round(CAST(sum(CAST(speed_mps AS DECIMAL(18, 6))) AS DOUBLE) / count(*) * 3.6, 2) "
        "AS mean_speed_kmh, round(quantile_cont(speed_mps, 0.85) * 3.6, 2) AS p85_speed_kmh",
        "speed_mps IS NOT NULL",
    ),
    "safety-events": _SAFETY_EVENTS,
    "fleet-activity": _FLEET_ACTIVITY,
    "trips-od": _TRIPS_OD,
}


def open_baseline(lake: Lake, day: date) -> duckdb.DuckDBPyConnection:
    """A plain in-memory connection whose ``state``, ``event``, ``network`` hold the JST ``day``'s samples.

    The files are those of the tables' current snapshots, read with ``read_parquet`` directly.
    """
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    start = f"TIMESTAMPTZ '{day.isoformat()} 00:00:00+09:00'"
    end = f"TIMESTAMPTZ '{day.isoformat()} 00:00:00+09:00' + INTERVAL 1 DAY"
    for name in STREAMS:
        if lake.has_table(name):
            snap = lake.snapshot(name)
            files, schema = snap.files, snap.schema
        else:
            files, schema = (), SCHEMAS[name].arrow
        con.execute(
            f"CREATE VIEW {name} AS SELECT * FROM ({select_files(files, schema)}) "
            f"WHERE ts >= {start} AND ts < {end}"
        )
    create_analyst_views(con)
    return con


def copy_cells(con: duckdb.DuckDBPyConnection, dataset_id: str, target: Path) -> tuple[float, int]:
    """Run the dataset's bare aggregation as one ``COPY ... TO`` ``target``: (seconds, rows written)."""
    sql = BASELINE_SQL[dataset_id]
    path = str(target).replace("'", "''")
    started = time.perf_counter()
    con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
    seconds = time.perf_counter() - started
    written = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()
    return seconds, int(written[0]) if written is not None else 0
