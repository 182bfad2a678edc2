"""A synthetic corridor day for ``bench query``: state, network and event rows made with numpy, not MQTT.

The simulator's fleet (``corridorhub.simulator``: operators, device ids, routes along the real streets,
cell sites) drives one operating day, 05:00-23:00 JST, at a sampling rate chosen so the day holds the
requested number of ``state`` rows.  Each device drives its route in cycles: a dwell at a stop (15 s to
3 min, so some are stops in the ``trips`` sense), then a drive with smooth acceleration and braking, mostly
autonomous.  Every fifth state sample of a device also gives a ``network`` sample (radio from the simulated
cell sites: log-distance path loss, strongest site serves); about one state sample in 6,000 gives an event.

The day is written through ``store.lake.Lake.append`` one hour at a time, each hour in timestamp order as
ingest would commit it (ingest's flushes are time-ordered too), so a table gets about 19 commits of
~1.1 million state rows at the default scale.  Everything is seeded: the same rows and seed give the same
lake.  A manifest written last marks a complete lake, so a later run reuses it.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from tqdm import tqdm

from corridorhub.simulator.devices import fleet_identities
from corridorhub.simulator.radio import CELL_SITES
from corridorhub.simulator.routes import Route
from store.geo import assign_zone
from store.lake import Lake

#: Bump when the generated data changes, so cached lakes of an older generator are not reused.
GENERATOR_VERSION = 1
#: The operating day: 05:00-23:00 JST on a Friday, that is 20:00 UTC the day before to 14:00 UTC.
DAY_START_UTC = datetime(2025, 3, 13, 20, 0, tzinfo=UTC)
DAY_SPAN_S = 18 * 3600
SLICE_S = 3600  # one Lake.append per table per hour of the day
NETWORK_EVERY = 5  # one network sample per 5 state samples
STATE_ROWS_PER_EVENT = 6_000
_TARGET_HZ = 10.0  # sampling rate at the default scale; the device count follows from it
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(35.55))
_CYCLE_S = (240.0, 600.0)
_DWELL_S = (15.0, 180.0)
_EVENT_KINDS = (
    ("obstacle", "info", 0.30),
    ("door", "info", 0.20),
    ("delivery_start", "info", 0.10),
    ("delivery_done", "info", 0.10),
    ("takeover_request", "warning", 0.10),
    ("disengagement", "warning", 0.08),
    ("near_miss", "warning", 0.05),
    ("comms_lost", "warning", 0.03),
    ("comms_restored", "info", 0.03),
    ("emergency_stop", "critical", 0.01),
)

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DayPlan:
    """How many devices sample how often to give ``rows`` state rows over the operating day."""

    rows: int
    seed: int
    devices: int
    samples_per_device: int
    interval_s: float

    @classmethod
    def for_rows(cls, rows: int, seed: int) -> DayPlan:
        devices = max(4, round(rows / (_TARGET_HZ * DAY_SPAN_S)))
        per_device = math.ceil(rows / devices)
        return cls(rows, seed, devices, per_device, DAY_SPAN_S / per_device)

    @property
    def state_rows(self) -> int:
        return self.devices * self.samples_per_device

    @property
    def event_rows(self) -> int:
        return max(20, self.state_rows // STATE_ROWS_PER_EVENT)


@dataclass(frozen=True)
class DayCounts:
    state: int
    network: int
    event: int
    commits: int


class _Fleet:
    """Per-device constants of the generated day (route geometry, speeds, cycles), all numpy."""

    def __init__(self, plan: DayPlan, rng: np.random.Generator) -> None:
        identities = fleet_identities(plan.devices)
        self.operator = [i.operator for i, _, _ in identities]
        self.device_id = [i.device_id for i, _, _ in identities]
        self.device_type = [i.device_type for i, _, _ in identities]
        self.routes = [r for _, _, r in identities]
        n = plan.devices
        self.cruise = np.array([f.cruise_mps for _, f, _ in identities]) * rng.uniform(0.85, 1.15, n)
        self.drain = np.array([f.drain_pct_per_km for _, f, _ in identities])
        self.offset_s = rng.uniform(0, plan.interval_s, n)  # devices do not sample in lockstep
        self.distance = rng.uniform(0, 1, n) * np.array([r.length_m for r in self.routes])
        self.odometer0 = rng.uniform(1e6, 6e7, n)
        self.cycle_s = rng.uniform(*_CYCLE_S, n)
        cycles = int(DAY_SPAN_S / _CYCLE_S[0]) + 2
        self.dwell_s = rng.uniform(*_DWELL_S, (n, cycles))
        self.manual = rng.random((n, cycles)) < 0.12  # cycles driven by hand
        self.phase_s = rng.uniform(0, 1, n) * self.cycle_s
        self.last_speed = np.zeros(n)


def generate_day(lake: Lake, plan: DayPlan, progress: Callable[[int], None] | None = None) -> DayCounts:
    """Write the day into ``lake`` (empty tables are created); ``progress`` gets state rows written."""
    lake.ensure_tables()
    rng = np.random.default_rng(plan.seed)
    fleet = _Fleet(plan, rng)
    events_left = plan.event_rows
    counts = {"state": 0, "network": 0, "event": 0}
    commits = 0
    slices = list(_slices(plan))
    for number, (k0, k1) in enumerate(slices):
        state = _state_slice(plan, fleet, k0, k1, rng)
        network = _network_rows(state, k0, rng)
        # Spread the events over the slices in proportion to their rows.
        share = (k1 - k0) / plan.samples_per_device
        n_events = events_left if number == len(slices) - 1 else round(plan.event_rows * share)
        events_left -= n_events
        event = _event_rows(state, n_events, rng)
        for name, table in (("state", state), ("network", network), ("event", event)):
            if table.num_rows:
                lake.append(name, table)
                commits += 1
                counts[name] += table.num_rows
        if progress is not None:
            progress(state.num_rows)
    return DayCounts(commits=commits, **counts)


def _slices(plan: DayPlan) -> Iterator[tuple[int, int]]:
    """Sample-number ranges of about ``SLICE_S`` each (equal sizes: no tiny last commit)."""
    count = min(plan.samples_per_device, math.ceil(DAY_SPAN_S / SLICE_S))
    edges = np.linspace(0, plan.samples_per_device, count + 1).round().astype(np.int64)
    for k0, k1 in zip(edges[:-1], edges[1:], strict=True):
        yield int(k0), int(k1)


def _state_slice(plan: DayPlan, fleet: _Fleet, k0: int, k1: int, rng: np.random.Generator) -> pa.Table:
    """State rows of every device for sample numbers [k0, k1), in timestamp order."""
    n_dev, n_k = plan.devices, k1 - k0
    k = np.arange(k0, k1, dtype=np.int64)
    t = k[None, :] * plan.interval_s + fleet.offset_s[:, None]  # seconds since the day's start
    # Cycles: dwell at a stop, then drive with a smooth speed profile (sin^0.5: ramps at both ends).
    local = t + fleet.phase_s[:, None]
    cycle = np.minimum((local // fleet.cycle_s[:, None]).astype(np.int64), fleet.dwell_s.shape[1] - 1)
    into = local - cycle * fleet.cycle_s[:, None]
    rows = np.arange(n_dev)[:, None]
    dwell = np.minimum(fleet.dwell_s[rows, cycle], 0.8 * fleet.cycle_s[:, None])
    driving = into >= dwell
    u = np.clip((into - dwell) / (fleet.cycle_s[:, None] - dwell), 0.0, 1.0)
    speed = fleet.cruise[:, None] * np.sqrt(np.sin(np.pi * u)) * rng.uniform(0.9, 1.1, (n_dev, n_k))
    speed = np.where(driving, speed, 0.0)
    previous = np.concatenate([fleet.last_speed[:, None], speed[:, :-1]], axis=1)
    accel = (speed - previous) / plan.interval_s
    fleet.last_speed = speed[:, -1].copy()
    travelled = np.cumsum(speed * plan.interval_s, axis=1) + fleet.distance[:, None]
    fleet.distance = travelled[:, -1].copy()
    lat = np.empty((n_dev, n_k))
    lon = np.empty((n_dev, n_k))
    heading = np.empty((n_dev, n_k))
    for d, route in enumerate(fleet.routes):
        lat[d], lon[d], heading[d] = _along(route, travelled[d] % route.length_m)
    lat += rng.normal(0, 2.0 / _M_PER_DEG_LAT, lat.shape)  # GNSS noise, about 2 m
    lon += rng.normal(0, 2.0 / _M_PER_DEG_LON, lon.shape)
    odometer = fleet.odometer0[:, None] + travelled
    battery = np.clip(100.0 - fleet.drain[:, None] * (travelled / 1000.0) % 70.0, 5.0, 100.0)
    mode = np.where(~driving, 2, np.where(fleet.manual[rows, cycle], 1, 0))  # MODES index

    # Time-major order: all devices' k-th samples, then the (k+1)-th ...: ascending ts (offsets < interval).
    def flat(a: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        return np.ascontiguousarray(a.T).ravel()

    device = flat(np.broadcast_to(rows, (n_dev, n_k)))
    ts_us = _epoch_us(flat(t))
    lat_f, lon_f = flat(lat), flat(lon)
    return pa.table(
        {
            "operator": _labels(fleet.operator, device),
            "device_id": _labels(fleet.device_id, device),
            "ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            "seq": pa.array(flat(np.broadcast_to(k[None, :], (n_dev, n_k)))),
            "device_type": _labels(fleet.device_type, device),
            "lat": lat_f,
            "lon": lon_f,
            "alt_m": flat(np.round(3.0 + rng.normal(0, 0.8, (n_dev, n_k)), 1)),
            "speed_mps": flat(np.round(speed, 2)),
            "heading_deg": flat(np.round(heading, 1)),
            "accel_mps2": flat(np.round(accel, 2)),
            "mode": _labels(["autonomous", "manual", "stopped"], flat(mode)),
            "battery_pct": flat(np.round(battery, 1)),
            "odometer_m": flat(np.round(odometer, 1)),
            "zone": assign_zone(lat_f, lon_f),
            "extra": pa.nulls(n_dev * n_k, pa.string()),
            "received_at": pa.array(
                ts_us + rng.integers(40_000, 400_000, n_dev * n_k), pa.timestamp("us", tz="UTC")
            ),
            "date": _dates(ts_us),
        }
    )


def _along(route: Route, position: Floats) -> tuple[Floats, Floats, Floats]:
    """(lat, lon, heading) at distances ``position`` along a closed route."""
    cumulative = np.asarray(route.cumulative_m)
    points = np.asarray((*route.waypoints, route.waypoints[0]))
    lat = np.interp(position, cumulative, points[:, 0])
    lon = np.interp(position, cumulative, points[:, 1])
    segment = np.clip(np.searchsorted(cumulative, position, side="right") - 1, 0, len(route.headings) - 1)
    return lat, lon, np.asarray(route.headings)[segment]


def _network_rows(state: pa.Table, k0: int, rng: np.random.Generator) -> pa.Table:
    """One network sample for every ``NETWORK_EVERY``-th state sample of each device (same time, place)."""
    seq = state.column("seq").to_numpy()
    picked = np.flatnonzero(seq % NETWORK_EVERY == 0)
    sub = state.take(pa.array(picked))
    lat = sub.column("lat").to_numpy()
    lon = sub.column("lon").to_numpy()
    n = sub.num_rows
    sites = CELL_SITES
    dy = (lat[:, None] - np.array([s.lat for s in sites])[None, :]) * _M_PER_DEG_LAT
    dx = (lon[:, None] - np.array([s.lon for s in sites])[None, :]) * _M_PER_DEG_LON
    dist = np.maximum(np.hypot(dx, dy), 10.0)
    rsrp_all = (
        np.array([s.rsrp_at_50m_dbm for s in sites])[None, :]
        - 36.0 * np.log10(dist / 50.0)
        + rng.normal(0, 4.0, dist.shape)
    )
    serving = np.argmax(rsrp_all, axis=1)
    rsrp = rsrp_all[np.arange(n), serving]
    power_mw = 10.0 ** (rsrp_all / 10.0)
    interference = power_mw.sum(axis=1) - 10.0 ** (rsrp / 10.0)
    sinr = np.clip(10.0 * np.log10(10.0 ** (rsrp / 10.0) / (0.3 * interference + 10.0 ** (-11.8))), -20, 38)
    rsrq = np.clip(-19.0 + 0.45 * (sinr + 20.0), -40, 18)
    bandwidth = np.array([s.bandwidth_mhz for s in sites])[serving]
    dl = np.clip(0.55 * bandwidth * np.log2(1.0 + 10.0 ** (sinr / 10.0)), 0.1, None)
    rat_index = np.array([("NR_SA", "NR_NSA", "LTE").index(s.rat) for s in sites])[serving]
    ul = dl * np.array([0.18, 0.15, 0.25])[rat_index]
    rtt = np.array([s.base_rtt_ms for s in sites])[serving] + rng.exponential(6.0, n)
    rtt += np.where(sinr < 0, rng.exponential(40.0, n), 0.0)
    return pa.table(
        {
            "operator": sub.column("operator"),
            "device_id": sub.column("device_id"),
            "ts": sub.column("ts"),
            "seq": pa.array(sub.column("seq").to_numpy() // NETWORK_EVERY),
            "device_type": sub.column("device_type"),
            "lat": lat,
            "lon": lon,
            "rat": _labels(["NR_SA", "NR_NSA", "LTE"], rat_index),
            "cell_id": _labels([str(s.nci) for s in sites], serving),
            "rsrp_dbm": np.round(np.clip(rsrp, -150, -35), 1),
            "rsrq_db": np.round(rsrq, 1),
            "sinr_db": np.round(sinr, 1),
            "rtt_ms": np.round(rtt, 1),
            "dl_mbps": np.round(dl, 1),
            "ul_mbps": np.round(ul, 1),
            "zone": sub.column("zone"),
            "extra": pa.nulls(n, pa.string()),
            "received_at": sub.column("received_at"),
            "date": sub.column("date"),
        }
    )


def _event_rows(state: pa.Table, count: int, rng: np.random.Generator) -> pa.Table:
    """``count`` events at randomly chosen state samples, in timestamp order."""
    picked = np.sort(rng.choice(state.num_rows, size=min(count, state.num_rows), replace=False))
    sub = state.take(pa.array(picked))
    weights = np.array([w for _, _, w in _EVENT_KINDS])
    kind = rng.choice(len(_EVENT_KINDS), size=len(picked), p=weights / weights.sum())
    return pa.table(
        {
            "operator": sub.column("operator"),
            "device_id": sub.column("device_id"),
            "ts": sub.column("ts"),
            "seq": sub.column("seq"),
            "device_type": sub.column("device_type"),
            "kind": _labels([k for k, _, _ in _EVENT_KINDS], kind),
            "severity": _labels([s for _, s, _ in _EVENT_KINDS], kind),
            "lat": sub.column("lat"),
            "lon": sub.column("lon"),
            "detail": pa.nulls(len(picked), pa.string()),
            "zone": sub.column("zone"),
            "extra": pa.nulls(len(picked), pa.string()),
            "received_at": sub.column("received_at"),
            "date": sub.column("date"),
        }
    )


def _labels(values: list[str], index: npt.NDArray[np.generic]) -> pa.Array:
    """Strings by index into ``values``: a dictionary array cast to plain strings (the lake's type)."""
    indices = pa.array(np.asarray(index, np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array(values, pa.string())).cast(pa.string())


def _epoch_us(seconds_into_day: npt.NDArray[np.generic]) -> Ints:
    start_us = int(DAY_START_UTC.timestamp()) * 1_000_000
    return start_us + np.round(np.asarray(seconds_into_day, np.float64) * 1e6).astype(np.int64)


def _dates(ts_us: Ints) -> pa.Array:
    return pa.array((ts_us // 86_400_000_000).astype(np.int32), pa.date32())


# -- the cache -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedDay:
    """A generated lake and the plain sorted Parquet files made from it, under one folder."""

    folder: Path
    plan: DayPlan

    @property
    def lake_path(self) -> Path:
        return self.folder / "lake"

    @property
    def plain_path(self) -> Path:
        return self.folder / "plain"

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    def manifest(self) -> dict[str, object] | None:
        """The manifest of a complete lake of this plan and generator, else None."""
        try:
            found: dict[str, object] = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        expected = {"generator": GENERATOR_VERSION, "plan": asdict(self.plan)}
        return found if all(found.get(k) == v for k, v in expected.items()) else None

    def generate(self, echo: Callable[[str], None]) -> tuple[DayCounts, float]:
        """Make the day's lake afresh in its folder (a progress bar on a terminal); the row counts and
        the seconds it took.  Write the manifest once everything else is in place: it marks the day
        complete."""
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        plan = self.plan
        echo(f"generating {plan.state_rows:,} state rows ({plan.devices} devices, one every "
             f"{plan.interval_s:.3f} s each) into {self.lake_path}")  # fmt: skip
        started = time.perf_counter()
        with tqdm(
            total=plan.state_rows, unit=" rows", unit_scale=True, desc="corridor day", disable=None
        ) as bar:
            counts = generate_day(Lake(self.lake_path), plan, bar.update)
        seconds = time.perf_counter() - started
        echo(f"  {counts.state:,} state, {counts.network:,} network, {counts.event:,} event rows in "
             f"{counts.commits} commits, {seconds:.1f} s")  # fmt: skip
        return counts, seconds

    def write_manifest(self, counts: DayCounts, seconds: float) -> None:
        body = {
            "generator": GENERATOR_VERSION,
            "plan": asdict(self.plan),
            "counts": asdict(counts),
            "generate_s": round(seconds, 1),
        }
        self.manifest_path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")


def day_figures(
    rows: dict[str, int], devices: int, interval_s: float, generated_s: float | None
) -> dict[str, object]:
    """The figures that describe the generated day, in a benchmark's JSON line."""
    return {
        "rows": rows["state"],
        "network_rows": rows["network"],
        "event_rows": rows["event"],
        "devices": devices,
        "sample_interval_s": round(interval_s, 4),
        "generate_s": None if generated_s is None else round(generated_s, 1),
    }


def cached_day(workdir: Path, plan: DayPlan) -> CachedDay:
    return CachedDay(workdir / f"day-{plan.rows}-seed{plan.seed}-v{GENERATOR_VERSION}", plan)
