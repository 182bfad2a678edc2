"""The ``trajectories-sample`` dataset: pseudonymized, trimmed, coarsened point sequences of some trips.

Off unless asked for by name (``opt_in``).  From the lake's committed snapshot:

1. **Trips** are the analyst ``trips`` view's (``store.views``): a state sample belongs to a trip when it
   lies between the trip's first and last sample, so the public trips and the analysts' agree.  A trip
   belongs to the Japan-time day it starts on; trips starting in ``[date_from, date_to]`` are read.
2. **Privacy zones** cut trips: points inside a zone are removed and the trip splits there into segments;
   each segment is then trimmed like a trip, so nothing is published within the trim distance of where a
   vehicle entered or left a zone (a depot gate, a hospital entrance).
3. **Trimming**: from each segment, points are removed until the path has run ``trip_trim_m`` (+ the
   coarsening margin) from either end, and every point closer than that (straight line) to the segment's
   or the trip's true first or last point is removed too (loops that come back home).
4. **Coarsening**: time floored to 10 s with one point (the first sample) per 10 s; latitude and
   longitude rounded to a 0.0005 degree grid (about 55 m x 45 m here; a point moves at most
   :data:`COARSEN_MARGIN_M`, which the trim adds so that the *published* point keeps the distance).  A point
   whose rounded position falls in a privacy zone is removed as well.
5. **Sample**: segments shorter than :data:`MIN_POINTS` published points or :data:`MIN_LENGTH_M` of path
   are dropped; of each device's segments of a day at most :data:`MAX_TRIPS_PER_DEVICE_DAY` are kept,
   chosen by HMAC of the secret (deterministic, unpredictable without it).
6. **Pseudonyms**: HMAC-SHA256(key = ``pseudonym_secret``, message = purpose, JST day, operator,
   device_id), first 64 bits in hex: stable within a day, unlinkable across days without the secret.
   The secret is used only as the HMAC key; it is never written anywhere.
7. **k on quasi-identifiers**: trips whose (day, start hour, start and end 1 km mesh, device type) class
   holds fewer than ``publish_k`` distinct pseudonyms are suppressed (``publish.reid``), and the gate
   measures the result again with pycanon.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from publish.datasets import BuildRequest, register, register_check
from publish.model import BuiltDataset, DatasetSpec, OutputColumn, PrivacyReport
from publish.reid import check_trajectories, class_devices, pycanon_version, quasi_identifiers
from publish.source import open_source
from store.errors import ConfigError
from store.geo import PrivacyZones
from store.lake import Lake, fetch_arrow
from store.schema import TIMESTAMP
from store.settings import Settings
from store.views import EARTH_RADIUS_M

DATASET_ID = "trajectories-sample"
TIME_STEP_S = 10
GRID_DEG = 0.0005
#: Largest move by rounding to the grid (half the cell's diagonal at 36 deg N, rounded up).
COARSEN_MARGIN_M = 40.0
MIN_POINTS = 3
MIN_LENGTH_M = 300.0
MAX_TRIPS_PER_DEVICE_DAY = 4
_PURPOSE = "corridorhub/trajectories-sample/v1"
_JST_OFFSET = timedelta(hours=9)


def _column(name: str, type_: pa.DataType, unit: str, ja: str, en: str, dja: str, den: str) -> OutputColumn:
    return OutputColumn(name, type_, unit, ja, en, dja, den, kind="dimension" if unit == "" else "measure")


TRAJECTORIES_SPEC = DatasetSpec(
    id=DATASET_ID,
    title_ja="走行軌跡サンプル(仮名化)",
    title_en="Trajectory sample (pseudonymized)",
    description_ja=(
        "羽田・蒲田5G回廊の実証車両の走行軌跡の一部。車両は日ごとに変わる仮名で示し、"
        "各トリップの始点・終点付近とプライバシー区域の周辺を除き、時刻は10秒、位置は約50mに丸めている。"
    ),
    description_en=(
        "Some trips of the trial vehicles in the Haneda-Kamata 5G corridor as point sequences. Vehicles "
        "appear under a pseudonym that changes every day; the ends of each trip and the surroundings of "
        "privacy zones are removed, times are rounded to 10 s and positions to about 50 m."
    ),
    keywords_ja=("軌跡", "自動運転", "モビリティ", "仮名化"),
    keywords_en=("trajectories", "autonomous driving", "mobility", "pseudonymized"),
    columns=(
        _column(
            "pseudonym",
            pa.string(),
            "",
            "仮名",
            "Pseudonym",
            "車両の仮名(日本時間の日ごとに変わる)。",
            "Vehicle pseudonym, changing every Japan-time day.",
        ),
        _column(
            "trip_no",
            pa.int32(),
            "",
            "トリップ番号",
            "Trip number",
            "その日のその仮名のトリップの通し番号。",
            "Trip number of the pseudonym on that day, in time order.",
        ),
        _column(
            "point_no",
            pa.int32(),
            "",
            "点番号",
            "Point number",
            "トリップ内の点の通し番号。",
            "Point number within the trip, in time order.",
        ),
        _column(
            "ts",
            TIMESTAMP,
            "UTC",
            "時刻",
            "Time",
            "10秒単位に切り捨てた時刻(UTC)。",
            "Time rounded down to 10 seconds (UTC).",
        ),
        _column(
            "lat",
            pa.float64(),
            "deg",
            "緯度",
            "Latitude",
            "0.0005度に丸めた緯度(WGS84)。",
            "Latitude rounded to 0.0005 degree (WGS84).",
        ),
        _column(
            "lon",
            pa.float64(),
            "deg",
            "経度",
            "Longitude",
            "0.0005度に丸めた経度(WGS84)。",
            "Longitude rounded to 0.0005 degree (WGS84).",
        ),
        _column(
            "device_type",
            pa.string(),
            "",
            "車両種別",
            "Device type",
            "バス、シャトル、乗用車、ロボットなど。",
            "Kind of device: bus, shuttle, car, robot...",
        ),
        _column(
            "mode",
            pa.string(),
            "",
            "運転モード",
            "Driving mode",
            "自動、手動、遠隔、停止。",
            "Driving mode: autonomous, manual, remote, stopped.",
        ),
    ),  # fmt: skip
    spatial=False,
    time_resolution="PT10S",
    opt_in=True,
)


@dataclass
class _Trip:
    pseudonym: str
    day: date
    device_type: str | None
    ts: npt.NDArray[np.int64]  # coarsened, epoch microseconds
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    mode: list[str | None] = field(default_factory=list)
    rank: bytes = b""


def pseudonym(secret: str, day: date, operator: str, device_id: str) -> str:
    """The device's pseudonym on a Japan-time day: 64 bits of HMAC-SHA256, hex."""
    message = "\x00".join((_PURPOSE, day.isoformat(), operator, device_id)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:16]


def require_secret(settings: Settings) -> str:
    """The pseudonym secret, or a ConfigError that says how to set it."""
    if not settings.pseudonym_secret:
        raise ConfigError(
            "trajectories-sample needs a pseudonym secret: set CORRIDORHUB_PSEUDONYM_SECRET (or "
            "pseudonym_secret in corridorhub.toml) to a random text of at least 16 characters, kept private"
        )
    return settings.pseudonym_secret


def build_trajectories(
    lake: Lake,
    date_from: date,
    date_to: date,
    settings: Settings,
    *,
    at_versions: Mapping[str, int] | None = None,
) -> BuiltDataset:
    """Build the sample for trips starting on Japan-time days ``date_from`` to ``date_to`` (inclusive)."""
    secret = require_secret(settings)
    if date_to < date_from:
        raise ConfigError(f"The date range is reversed: {date_from} to {date_to}")
    zones = (
        PrivacyZones.from_geojson(settings.privacy_zones_file)
        if settings.privacy_zones_file is not None
        else PrivacyZones((), ())
    )
    samples, versions = _read_trip_samples(lake, date_from, date_to, settings, at_versions)
    trim = settings.trip_trim_m + COARSEN_MARGIN_M if settings.trip_trim_m > 0 else 0.0
    segments: list[_Trip] = []
    for trip in _split_by_trip(samples):
        segments.extend(_publishable_segments(trip, secret, zones, trim))
    sampled = _sample(segments, secret)
    table = _to_table(sampled)
    table, suppressed = _suppress_small_classes(table, settings.publish_k)
    trips_published = len(set(zip(table["pseudonym"].to_pylist(), table["trip_no"].to_pylist(), strict=True)))
    privacy = PrivacyReport(
        k=settings.publish_k,
        dominance_share=settings.publish_dominance,
        time_coarsening=f"PT{TIME_STEP_S}S (floored, one point per step)",
        space_coarsening=f"{GRID_DEG} degree grid (about 55 m x 45 m), at most {COARSEN_MARGIN_M:g} m moved",
        cells_before=len(sampled),
        cells_published=trips_published,
        cells_suppressed_k=suppressed,
        extra={
            "unit": "trip",
            "pseudonym": "HMAC-SHA256 of (JST day, operator, device_id), 64 bits, key kept secret",
            "trip_trim_m": settings.trip_trim_m,
            "privacy_zones": len(zones),
            "segments_publishable": len(segments),
            "max_trips_per_device_day": MAX_TRIPS_PER_DEVICE_DAY,
            "min_points": MIN_POINTS,
            "min_length_m": MIN_LENGTH_M,
        },
    )
    parameters: dict[str, Any] = {
        "dataset": DATASET_ID,
        "date_from": date_from.isoformat(),
        "date_to": date_to.isoformat(),
        "publish_k": settings.publish_k,
        "trip_trim_m": settings.trip_trim_m,
        "privacy_zones_file": str(settings.privacy_zones_file) if settings.privacy_zones_file else None,
        "time_step_s": TIME_STEP_S,
        "grid_deg": GRID_DEG,
        "coarsen_margin_m": COARSEN_MARGIN_M,
        "min_points": MIN_POINTS,
        "min_length_m": MIN_LENGTH_M,
        "max_trips_per_device_day": MAX_TRIPS_PER_DEVICE_DAY,
    }
    return BuiltDataset(
        spec=TRAJECTORIES_SPEC,
        table=table,
        privacy=privacy,
        date_from=date_from,
        date_to=date_to,
        source_versions=versions,
        parameters=parameters,
        bbox=_bbox(table),
        internal={"privacy_zones": zones},
    )


# -- reading -------------------------------------------------------------------------------------------------


def _read_trip_samples(
    lake: Lake, date_from: date, date_to: date, settings: Settings, at_versions: Mapping[str, int] | None
) -> tuple[pa.Table, dict[str, int]]:
    """State samples of the trips starting on the JST days asked for, with the trip they belong to.

    The source holds a day more on each side (trips are split as the analysts' are, and a trip running
    past midnight is whole) and keeps privacy-zone points: they cut trips into segments here.
    """
    wide = replace(settings, privacy_zones_file=None)
    source = open_source(
        lake, date_from - timedelta(days=1), date_to + timedelta(days=1), wide, at_versions=at_versions
    )
    try:
        table = fetch_arrow(
            source.con,
            """SELECT s.operator, s.device_id, t.trip_no, epoch_us(s.ts) AS ts_us, s.lat, s.lon,
                      s.device_type, s.mode,
                      CAST(timezone('Asia/Tokyo', t.start_ts) AS DATE) AS day_jst
               FROM trips t JOIN state s
                 ON s.operator = t.operator AND s.device_id = t.device_id
                AND s.ts BETWEEN t.start_ts AND t.end_ts
               WHERE CAST(timezone('Asia/Tokyo', t.start_ts) AS DATE) BETWEEN ? AND ?
                 AND s.lat IS NOT NULL AND s.lon IS NOT NULL
               ORDER BY s.operator, s.device_id, t.trip_no, s.ts""",
            [date_from, date_to],
        )
    finally:
        source.con.close()
    return table, dict(source.versions)


def _split_by_trip(samples: pa.Table) -> list[dict[str, Any]]:
    if samples.num_rows == 0:
        return []
    cols = {name: samples[name].to_numpy(zero_copy_only=False) for name in samples.column_names}
    key = np.char.add(np.char.add(cols["operator"].astype(str), "\x00"), cols["device_id"].astype(str))
    trip_no = cols["trip_no"].astype(np.int64)
    change = np.ones(len(trip_no), np.bool_)
    change[1:] = (key[1:] != key[:-1]) | (trip_no[1:] != trip_no[:-1])
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], len(trip_no))
    return [
        {
            "operator": str(cols["operator"][a]),
            "device_id": str(cols["device_id"][a]),
            "day": cols["day_jst"][a],
            "device_type": next((str(t) for t in cols["device_type"][a:b] if t is not None), None),
            "ts": cols["ts_us"][a:b].astype(np.int64),
            "lat": cols["lat"][a:b].astype(np.float64),
            "lon": cols["lon"][a:b].astype(np.float64),
            "mode": list(cols["mode"][a:b]),
        }
        for a, b in zip(starts, ends, strict=True)
    ]


# -- one trip ------------------------------------------------------------------------------------------------


def _publishable_segments(trip: dict[str, Any], secret: str, zones: PrivacyZones, trim: float) -> list[_Trip]:
    lat, lon, ts = trip["lat"], trip["lon"], trip["ts"]
    day = trip["day"] if isinstance(trip["day"], date) else date.fromisoformat(str(trip["day"]))
    name = pseudonym(secret, day, trip["operator"], trip["device_id"])
    inside = zones.contains(lat, lon)
    far_from_ends = (_distance_m(lat, lon, lat[0], lon[0]) >= trim) & (
        _distance_m(lat, lon, lat[-1], lon[-1]) >= trim
    )
    out: list[_Trip] = []
    for a, b in _runs(~inside):
        keep = far_from_ends[a:b] & _trimmed(lat[a:b], lon[a:b], trim)
        idx = np.flatnonzero(keep) + a
        if len(idx) == 0:
            continue
        c_ts = (ts[idx] // (TIME_STEP_S * 1_000_000)) * (TIME_STEP_S * 1_000_000)
        first_in_step = np.ones(len(idx), np.bool_)
        first_in_step[1:] = c_ts[1:] != c_ts[:-1]
        idx, c_ts = idx[first_in_step], c_ts[first_in_step]
        c_lat, c_lon = _round_grid(lat[idx]), _round_grid(lon[idx])
        clear = ~zones.contains(c_lat, c_lon)
        idx, c_ts, c_lat, c_lon = idx[clear], c_ts[clear], c_lat[clear], c_lon[clear]
        if len(idx) < MIN_POINTS or _path_m(lat[idx], lon[idx]) < MIN_LENGTH_M:
            continue
        segment = _Trip(name, day, trip["device_type"], c_ts, c_lat, c_lon, [trip["mode"][i] for i in idx])
        segment.rank = hmac.new(
            secret.encode(), f"{_PURPOSE}\x00sample\x00{name}\x00{int(ts[idx[0]])}".encode(), hashlib.sha256
        ).digest()
        out.append(segment)
    return out


def _trimmed(
    lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64], trim: float
) -> npt.NDArray[np.bool_]:
    """Points at least ``trim`` metres along the path from both ends, and that far from both end points."""
    steps = _distance_m(lat[1:], lon[1:], lat[:-1], lon[:-1])
    along = np.concatenate(([0.0], np.cumsum(steps)))
    total = along[-1]
    kept: npt.NDArray[np.bool_] = (
        (along >= trim)
        & (total - along >= trim)
        & (_distance_m(lat, lon, lat[0], lon[0]) >= trim)
        & (_distance_m(lat, lon, lat[-1], lon[-1]) >= trim)
    )
    return kept


def _sample(segments: list[_Trip], secret: str) -> list[_Trip]:
    by_device_day: dict[tuple[str, date], list[_Trip]] = {}
    for s in segments:
        by_device_day.setdefault((s.pseudonym, s.day), []).append(s)
    kept: list[_Trip] = []
    for group in by_device_day.values():
        kept.extend(sorted(group, key=lambda s: s.rank)[:MAX_TRIPS_PER_DEVICE_DAY])
    return kept


def _to_table(trips: list[_Trip]) -> pa.Table:
    schema = TRAJECTORIES_SPEC.schema
    trips = sorted(trips, key=lambda t: (t.day, t.pseudonym, int(t.ts[0])))
    numbers: dict[str, int] = {}
    cols: dict[str, list[Any]] = {name: [] for name in schema.names}
    for t in trips:
        numbers[t.pseudonym] = numbers.get(t.pseudonym, 0) + 1
        n = len(t.ts)
        cols["pseudonym"] += [t.pseudonym] * n
        cols["trip_no"] += [numbers[t.pseudonym]] * n
        cols["point_no"] += list(range(1, n + 1))
        cols["ts"] += t.ts.tolist()
        cols["lat"] += t.lat.tolist()
        cols["lon"] += t.lon.tolist()
        cols["device_type"] += [t.device_type] * n
        cols["mode"] += t.mode
    arrays = [
        pa.array(cols[f.name], pa.int64()).cast(f.type) if f.name == "ts" else pa.array(cols[f.name], f.type)
        for f in schema
    ]
    return pa.table(arrays, schema=schema)


def _suppress_small_classes(table: pa.Table, k: int) -> tuple[pa.Table, int]:
    """Drop trips whose quasi-identifier class has fewer than ``k`` distinct pseudonyms; renumber trips."""
    qi = quasi_identifiers(table)
    if qi.num_rows == 0:
        return table, 0
    ok = pc.greater_equal(class_devices(qi), k)
    kept_trips = set(
        zip(qi.filter(ok)["pseudonym"].to_pylist(), qi.filter(ok)["trip_no"].to_pylist(), strict=True)
    )
    suppressed = qi.num_rows - len(kept_trips)
    if suppressed == 0:
        return table, 0
    rows = list(zip(table["pseudonym"].to_pylist(), table["trip_no"].to_pylist(), strict=True))
    kept = table.filter(pa.array([row in kept_trips for row in rows], pa.bool_()))
    # Renumber so that a gap in trip_no does not reveal a suppressed trip (rows stay in their order).
    renumbered: list[int] = []
    seen: dict[str, dict[int, int]] = {}
    for p, t in zip(kept["pseudonym"].to_pylist(), kept["trip_no"].to_pylist(), strict=True):
        mine = seen.setdefault(p, {})
        renumbered.append(mine.setdefault(t, len(mine) + 1))
    kept = kept.set_column(kept.column_names.index("trip_no"), "trip_no", pa.array(renumbered, pa.int32()))
    return kept, suppressed


# -- geometry ------------------------------------------------------------------------------------------------


def _distance_m(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> npt.NDArray[np.float64]:
    """Haversine distance in metres (the same formula and radius as the views' ``haversine_m``)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat, dlon = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))), np.float64)


def _path_m(lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64]) -> float:
    return float(np.sum(_distance_m(lat[1:], lon[1:], lat[:-1], lon[:-1]))) if len(lat) > 1 else 0.0


def _round_grid(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    steps = 1 / GRID_DEG
    return np.asarray(np.round(values * steps) / steps, np.float64)


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) of each run of True in ``mask``."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _bbox(table: pa.Table) -> tuple[float, float, float, float] | None:
    if table.num_rows == 0:
        return None
    lat, lon = pc.min_max(table["lat"]), pc.min_max(table["lon"])
    return (lon["min"].as_py(), lat["min"].as_py(), lon["max"].as_py(), lat["max"].as_py())


def _preflight(settings: Settings) -> None:
    require_secret(settings)
    pycanon_version()


def _build(request: BuildRequest) -> BuiltDataset:
    return build_trajectories(
        request.lake, request.date_from, request.date_to, request.settings, at_versions=request.at_versions
    )


register(TRAJECTORIES_SPEC, _build, preflight=_preflight)
register_check(DATASET_ID, check_trajectories)
