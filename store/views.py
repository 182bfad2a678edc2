"""The analyst views: trips, device days, network quality and speed by mesh, events by zone.

Each view is declared once below (:data:`VIEWS`): its SQL, a description, and every column's type, unit and
meaning.  :func:`create_analyst_views` creates them on a DuckDB connection that has the lake's
``state``/``event``/``network`` views (:meth:`store.lake.Lake.connect`); ``docs/VIEWS.md`` is generated from
the same declarations (``python -m store.views > docs/VIEWS.md``; a test fails when the committed file
differs).

Definitions the views share (also in the docs):

* A sample is **still** when ``mode = 'stopped'`` or ``speed_mps < 0.5``.  A **stop** is a run of
  consecutive still samples of one device (no gap over 5 minutes inside it) whose first and last samples are
  at least 2 minutes apart.  Shorter halts (traffic lights, a quick door cycle) are part of the trip.
* A **trip** is a maximal run of a device's samples that are not in a stop, with no gap over 5 minutes
  between consecutive samples; it has at least 2 samples.  Its distance is the sum of haversine distances
  between its consecutive samples; its duration runs from its first to its last sample.
* Human-facing buckets (days, hours, 15-minute slots) are Japan time (JST, UTC+9, no daylight saving),
  as naive timestamps/dates named ``*_jst``; instants (``start_ts``, ``end_ts``) stay UTC ``TIMESTAMPTZ``.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from store.geo.mesh import install_geo_macros
from store.geo.zones import install_zones

STOP_SPEED_MPS = 0.5
STOP_MIN_S = 120
TRIP_GAP_S = 300
EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
MESH_LEVEL = 5  # 250 m


@dataclass(frozen=True)
class ViewColumn:
    name: str
    type: str  # DuckDB type as DESCRIBE prints it
    unit: str
    description: str


@dataclass(frozen=True)
class AnalystView:
    name: str
    description: str
    columns: tuple[ViewColumn, ...]
    sql: str  # may hold {event_zone}: the expression giving an event's zone


def _col(name: str, type_: str, unit: str, description: str) -> ViewColumn:
    return ViewColumn(name, type_, unit, description)


_JST = "timezone('Asia/Tokyo', ts)"
_DEVICE = "operator || '/' || device_id"  # '/' cannot occur in either identifier
_SHARE = "avg(CASE WHEN {col} {test} THEN 1.0 WHEN {col} IS NOT NULL THEN 0.0 END)"
_AUTONOMOUS = _SHARE.format(col="mode", test="= 'autonomous'")

# Per state sample: still / in_stop, the trip it belongs to, and the step (distance, time) from the
# previous sample when both are in the same trip.  Shared by `trips` and `device_day`.
_SEGMENTED = f"""samples AS (
    SELECT operator, device_id, ts, lat, lon, mode,
           coalesce(mode = 'stopped' OR speed_mps < {STOP_SPEED_MPS}, false) AS still
    FROM state WHERE lat IS NOT NULL AND lon IS NOT NULL AND ts IS NOT NULL
),
paired AS (
    SELECT *,
           lag(ts) OVER w AS prev_ts, lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon,
           lag(still) OVER w AS prev_still,
           (epoch_us(ts) - epoch_us(lag(ts) OVER w)) / 1e6 AS gap_s
    FROM samples WINDOW w AS (PARTITION BY operator, device_id ORDER BY ts)
),
runs AS (
    SELECT *,
           sum(CASE WHEN prev_ts IS NULL OR gap_s > {TRIP_GAP_S} OR still <> prev_still THEN 1 ELSE 0 END)
               OVER (PARTITION BY operator, device_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS run_key
    FROM paired
),
stops AS (
    SELECT *,
           still AND epoch_us(max(ts) OVER r) - epoch_us(min(ts) OVER r) >= {STOP_MIN_S} * 1000000 AS in_stop
    FROM runs WINDOW r AS (PARTITION BY operator, device_id, run_key)
),
marked AS (
    SELECT *,
           NOT in_stop AND (prev_ts IS NULL OR gap_s > {TRIP_GAP_S}
                            OR coalesce(lag(in_stop) OVER w, false)) AS trip_start
    FROM stops WINDOW w AS (PARTITION BY operator, device_id ORDER BY ts)
),
segmented AS (
    SELECT *,
           sum(CASE WHEN trip_start THEN 1 ELSE 0 END)
               OVER (PARTITION BY operator, device_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS trip_key,
           CASE WHEN NOT in_stop AND NOT trip_start
                THEN haversine_m(prev_lat, prev_lon, lat, lon) END AS step_m,
           CASE WHEN NOT in_stop AND NOT trip_start THEN gap_s END AS step_s
    FROM marked
)"""

_TRIPS = f"""WITH {_SEGMENTED}
SELECT operator, device_id,
       CAST(row_number() OVER (PARTITION BY operator, device_id ORDER BY min(ts)) AS BIGINT) AS trip_no,
       min(ts) AS start_ts, max(ts) AS end_ts,
       (epoch_us(max(ts)) - epoch_us(min(ts))) / 1e6 AS duration_s,
       coalesce(sum(step_m), 0.0) AS distance_m,
       count(*) AS samples,
       {_AUTONOMOUS} AS autonomous_share
FROM segmented WHERE NOT in_stop
GROUP BY operator, device_id, trip_key
HAVING count(*) >= 2"""

_DEVICE_DAY = f"""WITH {_SEGMENTED}
SELECT operator, device_id, CAST({_JST} AS DATE) AS day_jst,
       coalesce(sum(step_m), 0.0) AS distance_m,
       coalesce(sum(step_s), 0.0) AS active_time_s,
       avg(CASE WHEN in_stop THEN NULL WHEN mode = 'autonomous' THEN 1.0 WHEN mode IS NOT NULL THEN 0.0 END)
           AS autonomous_share,
       count(*) AS samples
FROM segmented
GROUP BY ALL"""

_NETWORK_METRICS: tuple[tuple[str, str, str], ...] = (
    ("rsrp_dbm", "dBm", "reference signal received power"),
    ("sinr_db", "dB", "signal to interference plus noise ratio"),
    ("rtt_ms", "ms", "round-trip time"),
    ("dl_mbps", "Mbit/s", "downlink throughput"),
    ("ul_mbps", "Mbit/s", "uplink throughput"),
)
_QUANTILES = (("p10", 0.1, "10th percentile"), ("median", 0.5, "median"), ("p90", 0.9, "90th percentile"))

_QUANTILE_COLUMNS = ",\n       ".join(
    f"quantile_cont({m}, {q}) AS {m}_{label}" for m, _, _ in _NETWORK_METRICS for label, q, _ in _QUANTILES
)

_NETWORK_MESH_HOUR = f"""SELECT jis_mesh(lat, lon, {MESH_LEVEL}) AS mesh250,
       date_trunc('hour', {_JST}) AS hour_jst,
       count(*) AS samples,
       count(DISTINCT {_DEVICE}) AS devices,
       {_QUANTILE_COLUMNS},
       {_SHARE.format(col="rat", test="IN ('NR_SA', 'NR_NSA')")} AS nr_share
FROM network
WHERE jis_mesh(lat, lon, {MESH_LEVEL}) IS NOT NULL
GROUP BY ALL"""

_SPEED_MESH_15MIN = f"""SELECT jis_mesh(lat, lon, {MESH_LEVEL}) AS mesh250,
       time_bucket(INTERVAL 15 MINUTE, {_JST}) AS slot_jst,
       count(*) AS samples,
       count(DISTINCT {_DEVICE}) AS devices,
       avg(speed_mps) AS mean_speed_mps,
       quantile_cont(speed_mps, 0.85) AS p85_speed_mps
FROM state
WHERE speed_mps IS NOT NULL AND jis_mesh(lat, lon, {MESH_LEVEL}) IS NOT NULL
GROUP BY ALL"""

_EVENTS_ZONE_DAY = f"""SELECT {{event_zone}} AS zone, CAST({_JST} AS DATE) AS day_jst, kind,
       count(*) AS events
FROM event
GROUP BY ALL"""

_OPERATOR = _col("operator", "VARCHAR", "", "Operator running the device.")
_DEVICE_ID = _col("device_id", "VARCHAR", "", "Device identifier within its operator.")
_MESH = _col("mesh250", "BIGINT", "JIS mesh", "JIS X 0410 quarter mesh (level 5, about 250 m), 10 digits.")
_SAMPLES = _col("samples", "BIGINT", "count", "Samples in the row's group.")
_DEVICES = _col("devices", "BIGINT", "count", "Distinct devices (operator and device_id) that sampled.")

VIEWS: tuple[AnalystView, ...] = (
    AnalystView(
        "trips",
        "One row per trip of a device: a run of samples between stops of 2 minutes or more, split "
        "where the device was silent for more than 5 minutes (see Definitions). Samples in stops belong "
        "to no trip.",
        (
            _OPERATOR,
            _DEVICE_ID,
            _col("trip_no", "BIGINT", "", "Trip number of the device, 1, 2, ... in time order."),
            _col("start_ts", "TIMESTAMP WITH TIME ZONE", "UTC", "Time of the trip's first sample."),
            _col("end_ts", "TIMESTAMP WITH TIME ZONE", "UTC", "Time of the trip's last sample."),
            _col("duration_s", "DOUBLE", "s", "end_ts - start_ts."),
            _col("distance_m", "DOUBLE", "m", "Sum of haversine distances between consecutive samples."),
            _col("samples", "BIGINT", "count", "State samples in the trip."),
            _col(
                "autonomous_share",
                "DOUBLE",
                "ratio 0-1",
                "Share of the trip's samples with a mode that are `autonomous` (null when none has a mode).",
            ),
        ),
        _TRIPS,
    ),
    AnalystView(
        "device_day",
        "One row per device and Japan-time day: distance and time on trips, autonomy, sample count. "
        "A step between two samples counts on the day of the later one.",
        (
            _OPERATOR,
            _DEVICE_ID,
            _col("day_jst", "DATE", "JST date", "Japan-time calendar day."),
            _col("distance_m", "DOUBLE", "m", "Distance driven on trips (the same steps as `trips`)."),
            _col("active_time_s", "DOUBLE", "s", "Time on trips: sum of the steps between trip samples."),
            _col(
                "autonomous_share",
                "DOUBLE",
                "ratio 0-1",
                "Share of the day's trip samples with a mode that are `autonomous` (stops excluded).",
            ),
            _col("samples", "BIGINT", "count", "All state samples of the device that day, stops included."),
        ),
        _DEVICE_DAY,
    ),
    AnalystView(
        "network_mesh_hour",
        "Radio and network quality per 250 m mesh cell and Japan-time hour. Percentiles interpolate "
        "linearly (quantile_cont) over the samples that have the measure; samples without a position in "
        "the mesh domain are left out.",
        (
            _MESH,
            _col("hour_jst", "TIMESTAMP", "JST", "Start of the Japan-time hour."),
            _SAMPLES,
            _DEVICES,
            *(
                _col(f"{m}_{label}", "DOUBLE", unit, f"{qtext.capitalize()} of the {text}.")
                for m, unit, text in _NETWORK_METRICS
                for label, _, qtext in _QUANTILES
            ),
            _col(
                "nr_share",
                "DOUBLE",
                "ratio 0-1",
                "Share of samples with a `rat` that were on 5G NR (`NR_SA` or `NR_NSA`).",
            ),
        ),
        _NETWORK_MESH_HOUR,
    ),
    AnalystView(
        "speed_mesh_15min",
        "Observed ground speed per 250 m mesh cell and Japan-time 15-minute slot, over every state "
        "sample with a speed (stopped ones included: this is the speed traffic actually had).",
        (
            _MESH,
            _col("slot_jst", "TIMESTAMP", "JST", "Start of the Japan-time 15-minute slot."),
            _SAMPLES,
            _DEVICES,
            _col("mean_speed_mps", "DOUBLE", "m/s", "Mean speed."),
            _col("p85_speed_mps", "DOUBLE", "m/s", "85th percentile speed (linear interpolation)."),
        ),
        _SPEED_MESH_15MIN,
    ),
    AnalystView(
        "events_zone_day",
        "Event counts per corridor zone, Japan-time day and kind. The zone is the event's `zone` column "
        "(added at ingest) or, for rows without one, computed from its position by `zone_at(lat, lon)`.",
        (
            _col(
                "zone",
                "VARCHAR",
                "",
                "`zone_id` of the corridor zone (see the `zones` table); null outside every zone or "
                "without a position.",
            ),
            _col("day_jst", "DATE", "JST date", "Japan-time calendar day."),
            _col("kind", "VARCHAR", "", "Event kind."),
            _col("events", "BIGINT", "count", "Number of events."),
        ),
        _EVENTS_ZONE_DAY,
    ),
)
VIEWS_BY_NAME = {v.name: v for v in VIEWS}

_HAVERSINE = f"""CREATE OR REPLACE MACRO haversine_m(lat1, lon1, lat2, lon2) AS
    2 * {EARTH_RADIUS_M} * asin(sqrt(
        pow(sin(radians(lat2 - lat1) / 2), 2)
        + cos(radians(lat1)) * cos(radians(lat2)) * pow(sin(radians(lon2 - lon1) / 2), 2)))"""


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> set[str]:
    return {row[0] for row in con.execute(f"SELECT column_name FROM (DESCRIBE {relation})").fetchall()}


def view_sql(view: AnalystView, *, event_has_zone: bool) -> str:
    """The SELECT of ``view``, with the zone expression for an event table with or without ``zone``."""
    zone = "coalesce(zone, zone_at(lat, lon))" if event_has_zone else "zone_at(lat, lon)"
    return view.sql.format(event_zone=zone)


def create_analyst_views(con: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    """Create the analyst views (and the geo macros, ``zones`` and ``haversine_m`` they use) on ``con``.

    ``con`` must already have the ``state``, ``event`` and ``network`` views.  Returns the view names.
    """
    install_geo_macros(con)
    install_zones(con)
    con.execute(_HAVERSINE)
    event_has_zone = "zone" in _columns(con, "event")
    for view in VIEWS:
        con.execute(f"CREATE OR REPLACE VIEW {view.name} AS {view_sql(view, event_has_zone=event_has_zone)}")
    return tuple(v.name for v in VIEWS)


# -- docs ------------------------------------------------------------------------------------------------

_DEFINITIONS = f"""## Definitions

- A state sample is **still** when `mode = 'stopped'` or `speed_mps < {STOP_SPEED_MPS}` m/s.
- A **stop** is a run of consecutive still samples of one device, with no gap over {TRIP_GAP_S // 60} minutes
  inside it, whose first and last samples are at least {STOP_MIN_S // 60} minutes apart. Shorter halts
  (traffic lights, a quick door cycle) stay part of the trip.
- A **trip** is a maximal run of a device's samples that are not in a stop, with no gap over
  {TRIP_GAP_S // 60} minutes between consecutive samples, and at least 2 samples. Its distance is the sum of
  haversine distances (Earth radius {EARTH_RADIUS_M:,} m) between its consecutive samples; its duration
  runs from its first to its last sample.
- **Japan time**: days, hours and 15-minute slots are JST (UTC+9, no daylight saving), as plain `DATE` and
  `TIMESTAMP` values named `*_jst`. Instants (`start_ts`, `end_ts`) stay `TIMESTAMP WITH TIME ZONE` (UTC in
  storage).
- **Mesh**: `mesh250` is the JIS X 0410 level-{MESH_LEVEL} (quarter, about 250 m) mesh code, from the macro
  `jis_mesh(lat, lon, level)` (levels 1-6; null outside lat 20-46, lon 122-154). A cell holds its south and
  west edges. `mesh_polygon(code)` / `mesh_geojson(codes)` in `store.geo` give the cells for maps.
- **Zones**: the `zones` table lists the corridor zones (`zone_id`, `name_ja`, `name_en`, `kind`,
  `area_m2`, `wkt`, bounding box); `zone_at(lat, lon)` gives the zone of a point in SQL. It tests the
  point against the table `zone_edges`, one row per edge of a zone's polygon (`zone_id`, `precedence`,
  `lon1`, `lat1`, `lon2`, `lat2`); where zones touch, the lower `precedence` (earlier in the zones file)
  wins. Both tables can be queried like the views.
"""


def render_views_doc() -> str:
    """docs/VIEWS.md: every view, its columns with type and unit, and its SQL."""
    lines = [
        "# Analyst views",
        "",
        "<!-- Generated by `python -m store.views` from store/views.py:"
        " edit the declarations, not this file. -->",
        "",
        "Views over the lake's committed snapshot, created by `store.views.create_analyst_views(con)` on a",
        "connection from `Lake.connect()`. The raw tables are described in `DATA_CONTRACT.md`.",
        "",
        _DEFINITIONS,
    ]
    for view in VIEWS:
        lines += [
            f"## `{view.name}`",
            "",
            view.description,
            "",
            "| column | type | unit | meaning |",
            "|---|---|---|---|",
        ]
        lines += [f"| `{c.name}` | {c.type} | {c.unit} | {c.description} |" for c in view.columns]
        sql = view_sql(view, event_has_zone=True) if "{event_zone}" in view.sql else view.sql
        lines += ["", "<details><summary>SQL</summary>", "", "```sql", sql.strip(), "```"]
        lines += ["", "</details>", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_views_doc(), end="")
