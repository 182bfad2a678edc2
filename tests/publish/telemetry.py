"""Telemetry for publish tests: rows of the lake schema, and a small corridor fleet written to a real lake."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from store.lake import Lake
from store.schema import EVENT_KINDS, SCHEMAS

DAY = date(2025, 3, 14)
# 10:00 JST on DAY
T0 = datetime(2025, 3, 14, 1, 0, tzinfo=UTC)
LAT0, LON0 = 35.5480, 139.7400  # near Haneda Innovation City
DEG_LAT_PER_M = 1 / 111_195.0


def rows(stream: str, records: Sequence[dict[str, Any]], received_at: datetime | None = None) -> pa.Table:
    """A table of ``stream``'s schema; ``date`` is the UTC date of ``ts``; missing columns are null
    (``received_at`` too, unless given: the hub's receipt time of every row)."""
    schema = SCHEMAS[stream].arrow
    columns = {}
    for f in schema:
        if f.name == "date":
            values: list[Any] = [r["ts"].astimezone(UTC).date() for r in records]
        elif f.name == "received_at" and received_at is not None:
            values = [received_at] * len(records)
        else:
            values = [r.get(f.name) for r in records]
        columns[f.name] = pa.array(values, f.type)
    return pa.table(columns, schema=schema)


@dataclass(frozen=True)
class Fleet:
    devices: int = 12
    operators: int = 3
    minutes: int = 60
    start: datetime = T0
    device_type: str = "shuttle"
    lat: float = LAT0
    lon: float = LON0
    events_per_device: int = 2
    seed: int = 0


def fleet_records(fleet: Fleet) -> dict[str, list[dict[str, Any]]]:
    """Each device drives north along its own lane from (lat, lon), 8 m/s, a state sample every 10 s and a
    network sample every 30 s, autonomous except for the first 5 minutes; events spread over the drive."""
    out: dict[str, list[dict[str, Any]]] = {"state": [], "network": [], "event": []}
    for d in range(fleet.devices):
        operator = f"op{d % fleet.operators}"
        device = f"veh-{fleet.seed}-{d:03d}"
        lon = fleet.lon + 0.0001 * (d % 4)
        steps = fleet.minutes * 6
        for i in range(steps):
            ts = fleet.start + timedelta(seconds=10 * i + d)
            lat = fleet.lat + 80 * i * DEG_LAT_PER_M
            base = {"operator": operator, "device_id": device, "ts": ts, "seq": i, "lat": lat, "lon": lon}
            out["state"].append(
                base
                | {
                    "device_type": fleet.device_type,
                    "speed_mps": 8.0 + (d % 5) * 0.5,
                    "mode": "manual" if i < 30 else "autonomous",
                }
            )
            if i % 3 == 0:
                out["network"].append(
                    base
                    | {
                        "seq": i // 3,
                        "rat": "NR_SA" if (i + d) % 4 else "LTE",
                        "rsrp_dbm": -80.0 - (i + d) % 20,
                        "sinr_db": 15.0 - (i % 7),
                        "rtt_ms": 20.0 + (i * d) % 13,
                        "dl_mbps": 300.0 - (i % 50),
                        "ul_mbps": 40.0 + d % 9,
                    }
                )
        for j in range(fleet.events_per_device):
            i = (j + 1) * steps // (fleet.events_per_device + 1)
            ts = fleet.start + timedelta(seconds=10 * i + d)
            out["event"].append(
                {
                    "operator": operator,
                    "device_id": device,
                    "ts": ts,
                    "seq": j,
                    "kind": EVENT_KINDS[j % 2],
                    "severity": "warning",
                    "lat": fleet.lat + 80 * i * DEG_LAT_PER_M,
                    "lon": lon,
                    "detail": f"driver note {d}",
                }
            )
    return out


def write_fleet(lake: Lake, *fleets: Fleet, received_at: datetime | None = None) -> Lake:
    lake.ensure_tables()
    for stream in ("state", "network", "event"):
        records = [r for fleet in fleets for r in fleet_records(fleet)[stream]]
        if records:
            lake.append(stream, rows(stream, records, received_at))
    return lake


def fleet_lake(root: Path, *fleets: Fleet) -> Lake:
    return write_fleet(Lake(root), *(fleets or (Fleet(),)))


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    r = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * r * math.asin(math.sqrt(a))
