"""The differential-privacy plans of the four aggregate datasets (``publish.noise``; docs/PRIVACY.md).

Each plan's query returns one row per device and cell, at every level the exact query publishes, from the
same source and with the same bucketing as ``publish.aggregates``.  The choices, per dataset:

==========================  ===  =======  =======  ==================  ===================================
dataset                     L    share    devices  counts (cap)        means (bounds of a device's mean)
==========================  ===  =======  =======  ==================  ===================================
``network-quality-mesh``    4    0.3      0.7      (none)              ``nr_share`` [0, 1]
``traffic-speed-mesh``      4    0.3      0.7      (none)              ``mean_speed_kmh`` [0, 120]
``safety-events``           2    0.2      0.6      ``events`` 5        (none)
``fleet-activity``          2    0.2      0.55     (none)              ``distance_km`` [0, 300],
                                                                       ``operating_hours`` [0, 24],
                                                                       ``autonomous_share`` [0, 1]
==========================  ===  =======  =======  ==================  ===================================

L: cells a device-day may contribute to (all levels together); share: the part of ``dp_epsilon`` the
dataset spends per device-day (the four add up to 1); devices: the part of that the device counts get (the
rest is split evenly over the counts and means).  Percentiles, medians, the mesh datasets' ``samples``
(its noise, at L x cap sensitivity, would dwarf it) and the safety events' rate per 100 km are empty under
differential privacy.  ``python -m publish.dp_error`` prints what these choices give.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import duckdb
import pyarrow as pa

from publish._specs import ALL_TYPES, COARSE_MESH_LEVEL, MESH_LEVEL, OUTSIDE_ZONES
from publish.aggregates import _DEVICE_DAYS, _EVENTS, _mesh_base
from publish.noise import DpPlan, corridor_meshes, register_dp
from store.geo import corridor_zones
from store.lake import fetch_arrow
from store.schema import DEVICE_TYPES, EVENT_KINDS
from store.settings import Settings
from store.views import _DEVICE_DAY

#: Speed bound of a device's mean in a cell: 120 km/h, the highest legal speed limit in Japan (the
#: corridor's roads are far slower); the schema sets only the lower bound (0).
SPEED_CAP_KMH = 120.0
#: L of the mesh datasets: cells (both levels together) a device-day may contribute to; a device-day with
#: more keeps a keyed random 4 of them.  Small on purpose: the noise on a device count grows with L.
MESH_CELLS_PER_DEVICE_DAY = 4
_NR = "CASE WHEN rat IN ('NR_SA', 'NR_NSA') THEN 1.0 WHEN rat IS NOT NULL THEN 0.0 END"
_QUANTILE_COLUMNS = tuple(
    f"{m}_{q}"
    for m in ("rsrp_dbm", "sinr_db", "rtt_ms", "dl_mbps", "ul_mbps")
    for q in ("p10", "median", "p90")
)


def _per_device_both_levels(bucket: str, base: str, measures: str) -> str:
    """One row per (bucket, mesh cell at 250 m and at 1 km, device)."""
    return f"""WITH s AS ({base})
SELECT t AS {bucket}, m5 AS mesh_code, device, count(*) AS samples, {measures}
FROM s GROUP BY t, m5, device
UNION ALL
SELECT t AS {bucket}, m3 AS mesh_code, device, count(*) AS samples, {measures}
FROM s GROUP BY t, m3, device"""


def _network_rows(con: duckdb.DuckDBPyConnection) -> pa.Table:
    base = _mesh_base("network", "date_trunc('hour', ts)", "rat")
    return fetch_arrow(con, _per_device_both_levels("hour_start", base, f"avg({_NR}) AS nr_share"))


def _traffic_rows(con: duckdb.DuckDBPyConnection) -> pa.Table:
    base = _mesh_base(
        "state", "time_bucket(INTERVAL 15 MINUTE, ts)", "speed_mps", where="speed_mps IS NOT NULL"
    )
    return fetch_arrow(
        con, _per_device_both_levels("slot_start", base, "avg(speed_mps) * 3.6 AS mean_speed_kmh")
    )


def _event_rows(con: duckdb.DuckDBPyConnection) -> pa.Table:
    return fetch_arrow(
        con, f"SELECT day_jst, zone, kind, device, count(*) AS events FROM ({_EVENTS}) GROUP BY ALL"
    )


def _per_day_segments(device_day: str) -> str:
    """The analyst view ``device_day`` with trips and stops segmented within each JST day.

    The view segments a device's whole timeline: a step over midnight counts on the later day, from the
    earlier day's last sample, and a stop can span midnight.  Then one device-day's samples could change
    the next day's distance, hours and autonomy, and the privacy unit would leak into its neighbour.  Cut
    at JST midnight, a device-day's values depend on its own samples only.
    """
    partition = "PARTITION BY operator, device_id"
    if device_day.count(partition) != 5 or "FROM device_day d" not in _DEVICE_DAYS:
        raise RuntimeError("store.views device_day changed: review the per-day segmentation of fleet DP")
    return device_day.replace(partition, f"{partition}, CAST({_JST_OF_TS} AS DATE)")


_JST_OF_TS = "timezone('Asia/Tokyo', ts)"
_DEVICE_DAYS_CUT = _DEVICE_DAYS.replace("FROM device_day d", f"FROM ({_per_day_segments(_DEVICE_DAY)}) d")


def _fleet_rows(con: duckdb.DuckDBPyConnection) -> pa.Table:
    per_device = """day_jst, device, CAST(distance_m AS DOUBLE) / 1000 AS distance_km,
           CAST(active_time_s AS DOUBLE) / 3600 AS operating_hours,
           autonomous_n / nullif(moded_n, 0) AS autonomous_share"""
    return fetch_arrow(
        con,
        f"""WITH p AS ({_DEVICE_DAYS_CUT})
        SELECT device_type, {per_device} FROM p
        UNION ALL
        SELECT '{ALL_TYPES}' AS device_type, {per_device} FROM p""",
    )


def _meshes(settings: Settings) -> list[Any]:
    return corridor_meshes(settings, MESH_LEVEL, COARSE_MESH_LEVEL)


def _zones(settings: Settings) -> list[Any]:
    return [*(z.zone_id for z in corridor_zones()), OUTSIDE_ZONES]


def _device_types(settings: Settings) -> list[Any]:
    return [*DEVICE_TYPES, ALL_TYPES]


register_dp(
    DpPlan(
        dataset_id="network-quality-mesh",
        device_rows=_network_rows,
        time_column="hour_start",
        space_column="mesh_code",
        space=_meshes,
        extra_keys={},
        time_step=timedelta(hours=1),
        devices_column="devices",
        contributions_per_day=MESH_CELLS_PER_DEVICE_DAY,
        epsilon_share=0.3,
        devices_share=0.7,
        counts={},
        means={"nr_share": (0.0, 1.0)},
        dropped=("samples", *_QUANTILE_COLUMNS),
        digits={"nr_share": 4},
    )
)
register_dp(
    DpPlan(
        dataset_id="traffic-speed-mesh",
        device_rows=_traffic_rows,
        time_column="slot_start",
        space_column="mesh_code",
        space=_meshes,
        extra_keys={},
        time_step=timedelta(minutes=15),
        devices_column="devices",
        contributions_per_day=MESH_CELLS_PER_DEVICE_DAY,
        epsilon_share=0.3,
        devices_share=0.7,
        counts={},
        means={"mean_speed_kmh": (0.0, SPEED_CAP_KMH)},
        dropped=("samples", "p85_speed_kmh"),
        digits={"mean_speed_kmh": 2},
    )
)
register_dp(
    DpPlan(
        dataset_id="safety-events",
        device_rows=_event_rows,
        time_column="day_jst",
        space_column="zone",
        space=_zones,
        extra_keys={"kind": EVENT_KINDS},
        time_step=timedelta(days=1),
        devices_column="devices",
        contributions_per_day=2,
        epsilon_share=0.2,
        devices_share=0.6,
        counts={"events": 5},
        means={},
        dropped=("events_per_100km_autonomous",),
    )
)
register_dp(
    DpPlan(
        dataset_id="fleet-activity",
        device_rows=_fleet_rows,
        time_column="day_jst",
        space_column="device_type",
        space=_device_types,
        extra_keys={},
        time_step=timedelta(days=1),
        devices_column="active_devices",
        contributions_per_day=2,
        epsilon_share=0.2,
        devices_share=0.55,
        counts={},
        means={"distance_km": (0.0, 300.0), "operating_hours": (0.0, 24.0), "autonomous_share": (0.0, 1.0)},
        totals=frozenset({"distance_km", "operating_hours"}),
        digits={"distance_km": 3, "operating_hours": 3, "autonomous_share": 4},
    )
)
