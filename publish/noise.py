"""Differential privacy for the aggregate datasets: per-dataset plans, public cell universes, noisy cells.

With ``dp_epsilon`` set, an aggregate dataset's counts and means come from :func:`publish.dp.apply_dp`
instead of its exact query.  Each dataset has a :class:`DpPlan` (``publish.aggregates_dp``):

* ``device_rows``: one row per device and cell (every level: 250 m and 1 km cells, a device type and the
  day's ``all`` total), from the same date-cut, privacy-zone-free source the exact query reads;
* the per-device cap of each count and the bounds of each mean (from the schema's ranges or a documented
  cap), and ``L``: the cells one device may contribute to per JST day (``contributions_per_day``);
* its share of ``dp_epsilon`` (``epsilon_share``: the shares of all plans add up to 1, so a day published
  by every dataset costs ``dp_epsilon``) and the part of it the device counts get (``devices_share``);
* which output columns are noisy, which are totals (noisy mean x noisy devices) and which are always empty
  (percentiles: the Laplace mechanisms here release counts and means only).

**The privacy unit is a device-day**: a device's samples of one JST day.  Every cell of every dataset lies
in one JST day, so each unit is bounded to L cells of its day and the days compose in parallel: a release
of any number of days spends its epsilon once per device-day.  The ledger (``publish.ledger``) adds up what
all datasets and releases spent on each day.

The device count is noised per (cell, operator) over the public list of operators (``dp_operators``; when
unset, the operators with rows in the release's days, taken as public: the trial operators of the testbed
are announced); ``devices`` is their sum, and whether a cell is published depends only on noisy
values (:func:`noisy_suppression`): the noisy device count against k, the largest noisy operator share
against the dominance share.  Nothing true (counts, shares, existence of data) decides a row.

The cells released are a **public universe** fixed before looking at the data (every time bucket of the
range x every 250 m and 1 km mesh of the corridor area; every zone x event kind x day; every device type x
day), less the cells that lie inside a privacy zone.  So which cells exist reveals nothing and no delta is
spent on selecting them: OpenDP proves pure epsilon-DP (delta 0) for these releases.  Device rows outside
the universe (a vehicle far outside the corridor) are dropped before contribution bounding.

:mod:`publish.dp_metadata` says in the release's metadata what a DP release gives (``dp_parameters``,
``dp_spec``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from publish._registry import BuildRequest
from publish.anonymize import Suppression
from publish.dp import DEVICES, OPERATOR_DEVICES, DpReport, apply_dp
from publish.dp_threshold import publication_threshold, sum_tail
from publish.model import DatasetSpec
from publish.previous import Key, jst_day
from store.errors import ConfigError
from store.geo import PrivacyZones, corridor_zones, jis_mesh, mesh_bounds, mesh_level, mesh_polygon
from store.settings import Settings

UniverseSpace = Callable[[Settings], list[Any]]
_JST = timezone(timedelta(hours=9))
_OPERATOR = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class DpPlan:
    """How one aggregate dataset is released under differential privacy (see the module doc)."""

    dataset_id: str
    device_rows: Callable[[duckdb.DuckDBPyConnection], pa.Table]  # keys + device + counts + means
    time_column: str
    space_column: str  # the key column the public universe enumerates besides time
    space: UniverseSpace  # its public values (settings: privacy zones)
    extra_keys: Mapping[str, tuple[Any, ...]]  # other key columns and their public values (kind)
    time_step: timedelta
    devices_column: str  # output column of the noisy distinct-device count
    contributions_per_day: int  # L: cells per device-day (a keyed random L of them when it has more)
    epsilon_share: float  # part of dp_epsilon this dataset spends per device-day (all plans: 1)
    devices_share: float  # part of the dataset's epsilon the device counts get (the rest: counts, means)
    counts: Mapping[str, int]  # count column -> per-device cap in one cell
    means: Mapping[str, tuple[float, float]]  # column -> bounds of a device's own mean in one cell
    totals: frozenset[str] = frozenset()  # mean columns published as noisy mean x noisy devices
    dropped: tuple[str, ...] = ()  # output columns always empty under differential privacy
    digits: Mapping[str, int] = dataclasses.field(default_factory=dict)  # rounding of noisy values

    @property
    def noisy(self) -> tuple[str, ...]:
        return (self.devices_column, *self.counts, *self.means)

    def epsilon(self, settings: Settings) -> float:
        """Epsilon per device-day this dataset's release spends (0 with DP off)."""
        return (settings.dp_epsilon or 0.0) * self.epsilon_share

    def delta(self, settings: Settings) -> float:
        return settings.dp_delta * self.epsilon_share


DP_PLANS: dict[str, DpPlan] = {}


def register_dp(plan: DpPlan) -> None:
    if plan.dataset_id in DP_PLANS:
        raise ValueError(f"differential privacy plan for {plan.dataset_id!r} is registered twice")
    DP_PLANS[plan.dataset_id] = plan


def dp_plan(dataset_id: str, settings: Settings) -> DpPlan | None:
    """The dataset's plan when differential privacy is on (``dp_epsilon`` set) and covers it, else None."""
    return DP_PLANS.get(dataset_id) if settings.dp_epsilon is not None else None


# -- the public universe -------------------------------------------------------------------------------------


def corridor_meshes(settings: Settings, fine: int, coarse: int) -> list[int]:
    """The ``coarse`` cells over the corridor zones' bounding box and all their ``fine`` cells, less those
    lying wholly inside a privacy zone (a setting, not data).  Sorted: coarse first, then fine."""
    west, south, east, north = shapely.union_all([z.polygon for z in corridor_zones()]).bounds
    coarse_codes = _lattice(south, west, north, east, coarse)
    fine_codes = sorted(
        {
            c
            for code in coarse_codes
            for c in _lattice(*mesh_bounds(code), fine)
            if str(c).startswith(str(code))
        }
    )
    codes = coarse_codes + fine_codes
    if settings.privacy_zones_file is not None:
        zones = PrivacyZones.from_geojson(settings.privacy_zones_file)
        if len(zones):
            union = shapely.union_all(zones.polygons)
            codes = [c for c in codes if not union.covers(mesh_polygon(c))]
    return codes


def _lattice(south: float, west: float, north: float, east: float, level: int) -> list[int]:
    """Codes of the ``level`` cells that meet the box, found by their centres on the level's grid."""
    height, width = {3: (1 / 120, 1 / 80), 4: (1 / 240, 1 / 160), 5: (1 / 480, 1 / 320)}[level]
    rows = range(math.floor(south / height), math.ceil(north / height))
    cols = range(math.floor(west / width), math.ceil(east / width))
    return sorted({int(jis_mesh((r + 0.5) * height, (c + 0.5) * width, level)) for r in rows for c in cols})


def universe(plan: DpPlan, request: BuildRequest, key_schema: pa.Schema) -> pa.Table:
    """Every public cell of the release: time buckets of the JST range x space values x extra keys."""
    days = (request.date_to - request.date_from).days + 1
    times: list[Any] = [request.date_from + timedelta(days=i) for i in range(days)]
    if plan.time_step < timedelta(days=1):  # instants (UTC) from JST midnight of date_from
        start = datetime.combine(request.date_from, datetime.min.time(), _JST).astimezone(UTC)
        steps = timedelta(days=days) // plan.time_step
        times = [start + i * plan.time_step for i in range(steps)]
    space = plan.space(request.settings)
    extra = list(plan.extra_keys.values())
    combos = list(itertools.product(times, space, *extra))
    names = [plan.time_column, plan.space_column, *plan.extra_keys]
    columns = {name: [c[i] for c in combos] for i, name in enumerate(names)}
    return pa.table({n: pa.array(columns[n], key_schema.field(n).type) for n in key_schema.names})


# -- noisy cells ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoisyCells:
    """Every cell of the universe with noisy values, and the noisy device count of each operator in it."""

    table: pa.Table  # the spec's columns
    report: DpReport
    operators: tuple[str, ...]  # public: the order of each cell's operator counts
    operator_devices: dict[Key, tuple[int, ...]]  # cell key -> noisy device count per operator (internal)
    threshold: int  # the least noisy device count published (at least k; see publication_threshold)
    false_cells_per_day: float  # expected cells without any device that pass the threshold, per day


def noisy_cells(
    con: duckdb.DuckDBPyConnection, request: BuildRequest, plan: DpPlan, key_columns: tuple[str, ...]
) -> NoisyCells:
    """The dataset's cells (spec columns) with noisy counts and means, and what OpenDP did."""
    spec, settings = request.spec, request.settings
    key_schema = pa.schema([spec.schema.field(k) for k in key_columns])
    cells = universe(plan, request, key_schema)
    rows = plan.device_rows(con)
    devices = rows.column("device").cast(pa.string()).to_pylist()
    days = [jst_day(v).isoformat() for v in rows.column(plan.time_column).to_pylist()]
    rows = pa.table(
        {
            **{k: rows.column(k).cast(key_schema.field(k).type) for k in key_columns},
            # the privacy unit: a device-day (``operator/device_id`` and the JST day of the cell)
            "device": pa.array([f"{d}@{day}" for d, day in zip(devices, days, strict=True)], pa.string()),
            "operator": pa.array([d.partition("/")[0] for d in devices], pa.string()),
            **{c: rows.column(c).cast(pa.int64()) for c in plan.counts},
            **{m: rows.column(m).cast(pa.float64()) for m in plan.means},
        }
    )
    public_space = pa.array(plan.space(settings), key_schema.field(plan.space_column).type)
    rows = rows.filter(pc.is_in(rows.column(plan.space_column), value_set=public_space))
    operators = public_operators(settings) or tuple(sorted({d.partition("/")[0] for d in devices}))
    noisy, report = apply_dp(
        rows,
        keys=list(key_columns),
        device="device",
        counts=plan.counts,
        means=plan.means,
        epsilon=plan.epsilon(settings),
        delta=plan.delta(settings),
        contributions=plan.contributions_per_day,
        seed=f"corridorhub differential privacy: {spec.id}".encode(),
        universe=cells,
        devices_share=plan.devices_share,
        operator="operator" if operators else None,
        operators=operators,
    )
    per_operator: dict[Key, tuple[int, ...]] = {}
    if OPERATOR_DEVICES in noisy.column_names:
        keys = zip(*(noisy.column(k).to_pylist() for k in key_columns), strict=True)
        counts = noisy.column(OPERATOR_DEVICES).to_pylist()
        per_operator = {tuple(k): tuple(c) for k, c in zip(keys, counts, strict=True)}
    scale, terms = report.queries[DEVICES]["scale"], max(1, len(operators))
    per_day = cells.num_rows / ((request.date_to - request.date_from).days + 1)
    threshold = publication_threshold(scale, terms, per_day, settings.publish_k, settings.dp_false_cells)
    false_cells = per_day * sum_tail(scale, terms, threshold)
    table = _spec_columns(noisy, spec, plan, key_columns)
    return NoisyCells(table, report, operators, per_operator, threshold, false_cells)


def public_operators(settings: Settings) -> tuple[str, ...]:
    """The operators of ``dp_operators`` (empty when unset), checked against the MQTT contract's names."""
    if not settings.dp_operators:
        return ()
    names = tuple(sorted({n.strip() for n in settings.dp_operators.split(",") if n.strip()}))
    bad = [n for n in names if not _OPERATOR.fullmatch(n)]
    if bad or not names:
        raise ConfigError(
            f"Setting 'dp_operators' must be operator names ([A-Za-z0-9_-]{{1,64}}) separated by commas, "
            f"got {settings.dp_operators!r}"
        )
    return names


def _spec_columns(noisy: pa.Table, spec: DatasetSpec, plan: DpPlan, key_columns: tuple[str, ...]) -> pa.Table:
    devices = noisy.column(DEVICES)
    out: dict[str, pa.Array | pa.ChunkedArray] = {}
    for column in spec.columns:
        name = column.name
        if name in key_columns:
            out[name] = noisy.column(name)
        elif name == "mesh_level":
            codes = noisy.column("mesh_code").to_pylist()
            out[name] = pa.array([mesh_level(int(c)) for c in codes], pa.int8())
        elif name == plan.devices_column:
            out[name] = devices
        elif name in plan.counts:
            out[name] = noisy.column(name)
        elif name in plan.means:
            values = noisy.column(name).to_numpy()
            if name in plan.totals:
                values = values * devices.to_numpy()
            out[name] = pa.array(np.round(values, plan.digits.get(name, 4)), pa.float64())
        else:
            out[name] = pa.nulls(noisy.num_rows, column.type)
    return pa.table(out).cast(spec.schema)


def noisy_share(operator_devices: tuple[int, ...]) -> float | None:
    """The largest operator's share of a cell's noisy device counts (negatives count as 0); None when
    every count is 0 or below."""
    positive = [max(0, c) for c in operator_devices]
    total = sum(positive)
    return max(positive) / total if total > 0 else None


def noisy_suppression(
    noisy: NoisyCells,
    key_columns: tuple[str, ...],
    *,
    k: int,
    dominance: float,
    devices_column: str,
    time_column: str,
    repeated_days: frozenset[date] = frozenset(),
) -> Suppression:
    """Which cells are published under differential privacy, from noisy values only: the noisy device
    count at least the threshold (k, raised so that noise alone publishes few empty cells:
    :func:`publish.dp.publication_threshold`), and no operator's share of the noisy device counts above
    ``dominance``; days published before are left to their first release.  No complementary
    suppression: every published value is noisy, and so is any difference of them (post-processing)."""
    table = noisy.table
    names = table.column_names
    columns = [table.column(n).to_pylist() for n in names]
    at = {n: i for i, n in enumerate(names)}
    result = Suppression(published=set(), cells_before=table.num_rows)
    for row in zip(*columns, strict=True):
        key: Key = tuple(row[at[c]] for c in key_columns)
        share = noisy_share(noisy.operator_devices.get(key, ()))
        if jst_day(row[at[time_column]]) in repeated_days:
            result.reasons[key] = "previous"
        elif row[at[devices_column]] is None or row[at[devices_column]] < max(k, noisy.threshold):
            result.reasons[key] = "k"
        elif share is None or share > dominance:
            result.reasons[key] = "dominance"
        else:
            result.published.add(key)
    result.suppressed_k = sum(r == "k" for r in result.reasons.values())
    result.suppressed_dominance = sum(r == "dominance" for r in result.reasons.values())
    result.suppressed_previous = sum(r == "previous" for r in result.reasons.values())
    return result
