"""Building an aggregate dataset: query the candidate cells in DuckDB, suppress, report.

A dataset's query (``publish.aggregates``) runs on the source connection (``publish.source``) and returns
:class:`Candidates`: every cell at every level with its statistics, already rounded, and the contributions
(leaf, device, operator, weight) behind them.  This module turns them into a :class:`BuiltDataset`: it
checks the column derivations against the schema's rules, applies ``publish.anonymize`` and fills in the
privacy report, the provenance and what the gate needs (``internal``, never written out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from publish._registry import BuildRequest, DatasetEntry, dataset_entry, left_out_under_dp
from publish._specs import COARSE_MESH_LEVEL
from publish.anonymize import CellIndex, Suppression, published_mask, suppress
from publish.closure import days_between, privacy_zones_sha256
from publish.dp_metadata import dp_parameters, dp_spec
from publish.errors import NoData
from publish.model import BuiltDataset, PrivacyReport
from publish.noise import dp_plan, noisy_cells, noisy_suppression
from publish.previous import FirstPublication, Key, jst_day, read_earlier, rows_by_key
from publish.rules import check_derivations
from publish.source import open_source
from store.geo import corridor_zones, mesh_bounds
from store.settings import Settings


@dataclass(frozen=True)
class Candidates:
    cells: pa.Table  # the dataset's columns, one row per cell and level, before suppression
    contributions: pa.Table  # key columns of the leaves + device, operator, weight
    denominators: pa.Table | None = None  # another population a measure depends on (checked by the gate)
    denominator_keys: tuple[str, ...] = ()
    # Statistics over only some samples of a cell (a percentile of a measure some samples lack): per leaf
    # and device, the operator and one count column per population, and which output column reads which.
    populations: pa.Table | None = None
    population_of: Mapping[str, str] = field(default_factory=dict)


Query = Callable[[duckdb.DuckDBPyConnection, BuildRequest], Candidates]

_COARSENING = {"PT1H": "1 hour (JST)", "PT15M": "15 minutes (JST)", "P1D": "1 day (JST)"}


def build_aggregate(request: BuildRequest, query: Query) -> BuiltDataset:
    spec, settings = request.spec, request.settings
    entry = dataset_entry(spec.id)
    keys = entry.key_columns
    check_derivations(spec, entry.derivations)
    plan = dp_plan(spec.id, settings)
    source = open_source(
        request.lake,
        request.date_from,
        request.date_to,
        settings,
        at_versions=request.at_versions,
        received_until=request.received_until,
        day_cuts=request.day_cuts,
    )
    try:
        candidates = query(source.con, request)
        noisy = noisy_cells(source.con, request, plan, keys) if plan is not None else None
    finally:
        source.con.close()
    if candidates.cells.num_rows == 0 and noisy is None:  # under DP the public universe is released
        raise NoData(
            f"No data for {spec.id} from {request.date_from} to {request.date_to} (JST) in the lake at "
            f"{request.lake.root} (tables read: {source.tables_read()})"
        )
    cells = candidates.cells.select([c.name for c in spec.columns]).cast(spec.schema)
    contributions = _with_key_types(candidates.contributions, cells, keys)
    index = CellIndex(
        contributions,
        keys,
        entry.rollup,
        settings.publish_k,
        settings.publish_dominance,
        entry.device_dominance,
    )
    assert entry.time_column is not None
    repeated = _repeated_days(request, keys, entry.time_column)
    # The days published before take their first release's rows; nothing of this build on them (cells,
    # counts) reaches the release, so that late data changes no byte of it (docs/PRIVACY.md).
    cells = _without_days(cells, entry.time_column, repeated)
    result: Suppression
    if plan is not None and noisy is not None:
        noisy = dataclasses.replace(noisy, table=_without_days(noisy.table, entry.time_column, repeated))
        cells = noisy.table
        spec = dp_spec(spec, plan, noisy.threshold, settings.publish_dominance)
        result = noisy_suppression(
            noisy,
            keys,
            k=settings.publish_k,
            dominance=settings.publish_dominance,
            devices_column=plan.devices_column,
            time_column=entry.time_column,
        )
    else:
        result = suppress(cells, index, time_column=entry.time_column)
    table = cells.filter(published_mask(cells, keys, result.published))
    withheld: dict[str, int] = {}
    if plan is None:
        table, withheld = withhold_statistics(table, candidates, entry, settings)
    rows_repeated = 0
    if repeated:  # the days published before: their first release's rows, as they are
        names = table.column_names
        rows = [dict(zip(names, row, strict=True)) for p in repeated.values() for row in p.rows]
        rows_repeated = len(rows)
        table = pa.concat_tables([table, pa.Table.from_pylist(rows, schema=table.schema)])
    table = table.sort_by([(k, "ascending") for k in keys]).combine_chunks()
    # the levels every build of the dataset has (both, under DP too), not those this build's data reached
    levels = {v for v in (spec.mesh_level, COARSE_MESH_LEVEL) if v is not None}
    mesh_levels = sorted(levels, reverse=True) if "mesh_level" in spec.schema.names else []
    counted = [d.isoformat() for d in days_between(request.date_from, request.date_to) if d not in repeated]
    privacy = PrivacyReport(
        k=settings.publish_k,
        dominance_share=settings.publish_dominance,
        time_coarsening=_COARSENING.get(spec.time_resolution, spec.time_resolution),
        space_coarsening=(
            "JIS X 0410 mesh levels " + ", ".join(str(v) for v in mesh_levels)
            if spec.spatial
            else (
                "corridor zones"
                if any(c == "zone" or c.endswith("_zone") for c in cells.column_names)
                else "none (no spatial column)"
            )
        ),
        cells_before=result.cells_before,
        cells_published=len(result.published),
        cells_suppressed_k=result.suppressed_k,
        cells_suppressed_dominance=result.suppressed_dominance,
        cells_suppressed_complementary=result.suppressed_complementary,
        extra={
            "days_counted": counted,
            "cells_counted": (
                "cells_before, cells_published and cells_suppressed_* count the cells of days_counted "
                "only: the days this release publishes first; a repeated day adds nothing of this build"
            ),
            "rows_repeated_from_earlier_releases": rows_repeated,
            "complementary_rule": (
                "residual of every published total or coarser cell passes k and dominance, and the devices "
                "found only in it are none or at least k"
            ),
            **_device_dominance(entry),
            "earlier_releases_rule": (
                "a day is published once, closed (publish_lateness_h after it ends), from what the hub had "
                "received by then; a later release repeats that release's rows for the day, byte for byte"
            ),
            "days_repeated": {d.isoformat(): p.release.folder.name for d, p in sorted(repeated.items())},
            "statistics_withheld": withheld,
            "privacy_zones_removed": source.privacy_zones,
        },
    )
    if plan is not None and noisy is not None:
        days = (request.date_to - request.date_from).days + 1
        privacy.epsilon, privacy.delta = plan.epsilon(settings), plan.delta(settings)  # the ledger's charge
        privacy.extra["complementary_rule"] = "not applied under differential privacy (values are noisy)"
        privacy.extra["differential_privacy"] = dp_parameters(plan, noisy, days)
        # what the guarantee does not extend to: datasets not released at all while DP is on, and why
        privacy.extra["left_out_under_differential_privacy"] = left_out_under_dp()
    identifiers = set(contributions.column("operator").to_pylist())
    identifiers |= {d.partition("/")[2] for d in contributions.column("device").to_pylist()}
    built = BuiltDataset(
        spec=spec,
        table=table,
        privacy=privacy,
        date_from=request.date_from,
        date_to=request.date_to,
        source_versions=dict(source.versions),
        parameters={
            "k": settings.publish_k,
            "dominance_share": settings.publish_dominance,
            "time_resolution": spec.time_resolution,
            "mesh_levels": mesh_levels,
            "lateness_h": settings.publish_lateness_h,
            # the zones' contents decide the rows; their file's path is the hub's business, not the public's
            "privacy_zones_sha256": privacy_zones_sha256(settings),
            "earlier_releases": sorted(p.name for p in request.previous),
        },
        bbox=_bbox(table) if spec.spatial else _corridor_bbox(),
        internal={
            "contributions": contributions,
            "denominators": candidates.denominators,
            "denominator_keys": candidates.denominator_keys,
            "populations": _cast_keys(candidates.populations, cells, keys),
            "population_of": dict(candidates.population_of),
            "previous": list(request.previous),
            "repeated_days": frozenset(repeated),
            "identifiers": identifiers,
            "differential_privacy": plan is not None,
            "dp_operator_devices": noisy.operator_devices if noisy is not None else {},
            "dp_threshold": noisy.threshold if noisy is not None else None,
        },
    )
    if plan is not None:
        built.parameters.update(
            dp_epsilon=settings.dp_epsilon,
            dp_delta=settings.dp_delta,
            dp_false_cells=settings.dp_false_cells,
            dp_operators=settings.dp_operators,
        )
    return built


def withhold_statistics(
    table: pa.Table, candidates: Candidates, entry: DatasetEntry, settings: Settings
) -> tuple[pa.Table, dict[str, int]]:
    """Empty each published statistic whose own population fails k or dominance.

    A percentile of a measure is computed over the samples that carry it, not over every sample of the
    cell: one operator's devices may be the only ones reporting it (or most of them: one operator's values
    can decide a median).  Such a value is published only when the devices and operators behind *it* pass
    k and dominance, as a rate's distance must; otherwise it is left empty and counted in the report."""
    if candidates.populations is None or not candidates.population_of or table.num_rows == 0:
        return table, {}
    keys = entry.key_columns
    published = set(rows_by_key(table, keys))
    failing: dict[str, set[Key]] = {}
    for population in sorted(set(candidates.population_of.values())):
        contributions = _population(candidates.populations, population, table, keys)
        index = CellIndex(contributions, keys, entry.rollup, settings.publish_k, settings.publish_dominance)
        below = index.leaves_below(published)
        failing[population] = {key for key in published if not below[key] or index.failure(below[key])}
    key_rows = list(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
    withheld: dict[str, int] = {}
    for name, population in sorted(candidates.population_of.items()):
        values = table.column(name).to_pylist()
        kept = [
            None if tuple(key) in failing[population] else v for key, v in zip(key_rows, values, strict=True)
        ]
        withheld[name] = sum(v is not None for v in values) - sum(v is not None for v in kept)
        table = table.set_column(
            table.column_names.index(name), name, pa.array(kept, table.schema.field(name).type)
        )
    return table, withheld


def _cast_keys(table: pa.Table | None, cells: pa.Table, keys: tuple[str, ...]) -> pa.Table | None:
    if table is None:
        return None
    for key in keys:
        i = table.column_names.index(key)
        table = table.set_column(i, key, table.column(key).cast(cells.schema.field(key).type))
    return table


def _population(populations: pa.Table, name: str, cells: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """The contributions of one population: leaf keys, device, operator, weight (its count), count > 0."""
    counts = populations.column(name).cast(pa.float64())
    table = populations.select([*keys, "device", "operator"]).append_column("weight", counts)
    table = table.filter(pc.greater(table.column("weight"), 0))
    return _with_key_types(table, cells, keys)


def _device_dominance(entry: DatasetEntry) -> dict[str, object]:
    """The per-device dominance rule of the privacy report, for a dataset that has one (trips-od)."""
    if entry.device_dominance is None:
        return {}
    return {
        "device_dominance_share": entry.device_dominance,
        "device_dominance_rule": (
            "a row (and the residual of a total) is suppressed, counted as dominance, when one device "
            "holds more than device_dominance_share of its weight"
        ),
    }


def _without_days(cells: pa.Table, time_column: str, days: Mapping[date, object]) -> pa.Table:
    """``cells`` less the rows of ``days`` (JST days of ``time_column``)."""
    if not days or cells.num_rows == 0:
        return cells
    keep = [jst_day(v) not in days for v in cells.column(time_column).to_pylist()]
    return cells.filter(pa.array(keep, pa.bool_()))


def _repeated_days(
    request: BuildRequest, keys: tuple[str, ...], time_column: str
) -> dict[date, FirstPublication]:
    """The days of the range that an earlier release published first, with that release's rows."""
    if not request.previous:
        return {}
    earlier = read_earlier(request.previous, request.spec, keys)
    first = earlier.first_publications([c.name for c in request.spec.columns].index(time_column))
    return {day: p for day, p in first.items() if request.date_from <= day <= request.date_to}


def _with_key_types(contributions: pa.Table, cells: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    columns = {k: contributions.column(k).cast(cells.schema.field(k).type) for k in keys}
    columns["device"] = contributions.column("device").cast(pa.string())
    columns["operator"] = contributions.column("operator").cast(pa.string())
    columns["weight"] = contributions.column("weight").cast(pa.float64())
    return pa.table(columns)


def _bbox(table: pa.Table) -> tuple[float, float, float, float] | None:
    codes = set(table.column("mesh_code").to_pylist()) if table.num_rows else set()
    if not codes:
        return None
    bounds = [mesh_bounds(int(c)) for c in codes]  # (south, west, north, east)
    return (
        min(b[1] for b in bounds),
        min(b[0] for b in bounds),
        max(b[3] for b in bounds),
        max(b[2] for b in bounds),
    )


def _corridor_bbox() -> tuple[float, float, float, float]:
    bounds = [z.polygon.bounds for z in corridor_zones()]  # (west, south, east, north)
    return (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )
