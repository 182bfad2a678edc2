"""Differential privacy for the aggregate datasets: per-dataset plans, public cell universes, noisy cells.

With ``dp_epsilon`` set, an aggregate dataset's counts and means come from :func:`publish.dp.apply_dp`
instead of its exact query.  Each dataset has a :class:`DpPlan` (``publish.aggregates_dp``):

* ``device_rows``: one row per device and cell (every level: 250 m and 1 km cells, a device type and the
  day's ``all`` total), from the same date-cut, privacy-zone-free source the exact query reads;
* the per-device cap of each count and the bounds of each mean (from the schema's ranges or a documented
  cap), and ``L``: the cells one device may contribute to per JST day (``contributions_per_day``; a
  release of n days bounds a device to ``n * L`` cells, the privacy unit being the device over the release);
* which output columns are noisy, which are totals (noisy mean x noisy devices) and which are always empty
  (percentiles: the Laplace mechanisms here release counts and means only).

The cells released are a **public universe** fixed before looking at the data (every time bucket of the
range x every 250 m and 1 km mesh of the corridor area; every zone x event kind x day; every device type x
day), less the cells that lie inside a privacy zone.  So which cells exist reveals nothing and no delta is
spent on selecting them: OpenDP proves pure epsilon-DP (delta 0) for these releases.  Device rows outside
the universe (a vehicle far outside the corridor) are dropped before contribution bounding.

:func:`dp_spec` returns the dataset's spec with each column's description saying whether it is noisy or
empty in this release, so the data dictionary and metadata state it too.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from publish._registry import BuildRequest
from publish.dp import DEVICES, DpReport, apply_dp
from publish.model import DatasetSpec
from store.geo import PrivacyZones, corridor_zones, jis_mesh, mesh_bounds, mesh_level, mesh_polygon
from store.settings import Settings

UniverseSpace = Callable[[Settings], list[Any]]
_JST = timezone(timedelta(hours=9))


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
    contributions_per_day: int  # L per JST day
    counts: Mapping[str, int]  # count column -> per-device cap in one cell
    means: Mapping[str, tuple[float, float]]  # column -> bounds of a device's own mean in one cell
    totals: frozenset[str] = frozenset()  # mean columns published as noisy mean x noisy devices
    dropped: tuple[str, ...] = ()  # output columns always empty under differential privacy
    digits: Mapping[str, int] = dataclasses.field(default_factory=dict)  # rounding of noisy values

    @property
    def noisy(self) -> tuple[str, ...]:
        return (self.devices_column, *self.counts, *self.means)

    def contributions(self, days: int) -> int:
        return self.contributions_per_day * days


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


def noisy_cells(
    con: duckdb.DuckDBPyConnection, request: BuildRequest, plan: DpPlan, key_columns: tuple[str, ...]
) -> tuple[pa.Table, DpReport]:
    """The dataset's cells (spec columns) with noisy counts and means, and what OpenDP did."""
    spec, settings = request.spec, request.settings
    assert settings.dp_epsilon is not None
    key_schema = pa.schema([spec.schema.field(k) for k in key_columns])
    cells = universe(plan, request, key_schema)
    rows = plan.device_rows(con)
    rows = pa.table(
        {
            **{k: rows.column(k).cast(key_schema.field(k).type) for k in key_columns},
            "device": rows.column("device").cast(pa.string()),
            **{c: rows.column(c).cast(pa.int64()) for c in plan.counts},
            **{m: rows.column(m).cast(pa.float64()) for m in plan.means},
        }
    )
    public_space = pa.array(plan.space(settings), key_schema.field(plan.space_column).type)
    rows = rows.filter(pc.is_in(rows.column(plan.space_column), value_set=public_space))
    days = (request.date_to - request.date_from).days + 1
    noisy, report = apply_dp(
        rows,
        keys=list(key_columns),
        device="device",
        counts=plan.counts,
        means=plan.means,
        epsilon=settings.dp_epsilon,
        delta=settings.dp_delta,
        contributions=plan.contributions(days),
        seed=f"corridorhub differential privacy: {spec.id}".encode(),
        universe=cells,
    )
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
    return pa.table(out).cast(spec.schema), report


def dp_parameters(plan: DpPlan, report: DpReport, days: int) -> dict[str, Any]:
    """The differential-privacy part of the privacy report (privacy.json, datapackage, DCAT, CKAN)."""
    return {
        **report.as_dict(),
        "privacy_unit": "device (all its samples in the release)",
        "contributions_per_day": plan.contributions_per_day,
        "days": days,
        "count_caps": dict(plan.counts),
        "mean_bounds": {name: list(bounds) for name, bounds in plan.means.items()},
        "noisy_columns": list(plan.noisy),
        "totals_as_noisy_mean_times_noisy_devices": sorted(plan.totals),
        "empty_columns": list(plan.dropped),
        "cells": "public universe: every time bucket x every corridor cell (privacy zones excluded)",
        "k_rule": "k applies to the noisy device count",
        "dominance_rule": "on the true operator shares (commercial confidentiality, not privacy)",
        "complementary_rule": "not applied: every published value is noisy, differences of them too",
    }


_NOISY_EN = (
    " [Differential privacy in this release: noisy (OpenDP Laplace noise; a mean is over devices, each "
    "device's own mean in the cell counting once); see privacy.json.]"
)
_NOISY_JA = (
    "［この版は差分プライバシー: ノイズを加えた値（平均は端末ごとの平均の平均）。privacy.json 参照。］"
)
_EMPTY_EN = " [Differential privacy in this release: always empty (not released under this mechanism).]"
_EMPTY_JA = "［この版は差分プライバシー: 常に空欄（この方式では公開しません）。］"


def dp_spec(spec: DatasetSpec, plan: DpPlan) -> DatasetSpec:
    """``spec`` with each noisy or empty column saying so in its ja/en description."""
    columns = []
    for column in spec.columns:
        if column.name in plan.noisy:
            en, ja = _NOISY_EN, _NOISY_JA
        elif column.name in plan.dropped:
            en, ja = _EMPTY_EN, _EMPTY_JA
        else:
            columns.append(column)
            continue
        columns.append(
            dataclasses.replace(
                column, description_en=column.description_en + en, description_ja=column.description_ja + ja
            )
        )
    return dataclasses.replace(spec, columns=tuple(columns))
