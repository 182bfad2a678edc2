"""Building an aggregate dataset: query the candidate cells in DuckDB, suppress, report.

A dataset's query (``publish.aggregates``) runs on the source connection (``publish.source``) and returns
:class:`Candidates`: every cell at every level with its statistics, already rounded, and the contributions
(leaf, device, operator, weight) behind them.  This module turns them into a :class:`BuiltDataset`: it
checks the column derivations against the schema's rules, applies ``publish.anonymize`` and fills in the
privacy report, the provenance and what the gate needs (``internal``, never written out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import duckdb
import pyarrow as pa

from publish._registry import BuildRequest, dataset_entry
from publish.anonymize import CellIndex, Suppression, published_mask, suppress
from publish.closure import privacy_zones_sha256
from publish.errors import NoData
from publish.model import BuiltDataset, PrivacyReport
from publish.noise import dp_parameters, dp_plan, dp_spec, noisy_cells, noisy_suppression
from publish.previous import FirstPublication, read_earlier
from publish.rules import check_derivations
from publish.source import open_source
from store.geo import corridor_zones, mesh_bounds


@dataclass(frozen=True)
class Candidates:
    cells: pa.Table  # the dataset's columns, one row per cell and level, before suppression
    contributions: pa.Table  # key columns of the leaves + device, operator, weight
    denominators: pa.Table | None = None  # another population a measure depends on (checked by the gate)
    denominator_keys: tuple[str, ...] = ()


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
    index = CellIndex(contributions, keys, entry.rollup, settings.publish_k, settings.publish_dominance)
    assert entry.time_column is not None
    repeated = _repeated_days(request, keys, entry.time_column)
    result: Suppression
    if plan is not None and noisy is not None:
        cells = noisy.table
        spec = dp_spec(spec, plan)
        result = noisy_suppression(
            noisy,
            keys,
            k=settings.publish_k,
            dominance=settings.publish_dominance,
            devices_column=plan.devices_column,
            time_column=entry.time_column,
            repeated_days=frozenset(repeated),
        )
    else:
        result = suppress(cells, index, time_column=entry.time_column, repeated_days=frozenset(repeated))
    table = cells.filter(published_mask(cells, keys, result.published))
    if repeated:  # the days published before: their first release's rows, as they are
        names = table.column_names
        rows = [dict(zip(names, row, strict=True)) for p in repeated.values() for row in p.rows]
        table = pa.concat_tables([table, pa.Table.from_pylist(rows, schema=table.schema)])
    table = table.sort_by([(k, "ascending") for k in keys]).combine_chunks()
    mesh_levels = (
        sorted({int(v) for v in cells.column("mesh_level").to_pylist()}, reverse=True)
        if ("mesh_level" in cells.column_names)
        else []
    )
    privacy = PrivacyReport(
        k=settings.publish_k,
        dominance_share=settings.publish_dominance,
        time_coarsening=_COARSENING.get(spec.time_resolution, spec.time_resolution),
        space_coarsening=(
            "JIS X 0410 mesh levels " + ", ".join(str(v) for v in mesh_levels)
            if spec.spatial
            else ("corridor zones" if "zone" in cells.column_names else "none (no spatial column)")
        ),
        cells_before=result.cells_before,
        cells_published=len(result.published),
        cells_suppressed_k=result.suppressed_k,
        cells_suppressed_dominance=result.suppressed_dominance,
        cells_suppressed_complementary=result.suppressed_complementary,
        extra={
            "cells_suppressed_earlier_releases": result.suppressed_previous,
            "complementary_rule": "residual of every published total or coarser cell passes k and dominance",
            "earlier_releases_rule": (
                "a day is published once, closed (publish_lateness_h after it ends), from what the hub had "
                "received by then; a later release repeats that release's rows for the day, byte for byte"
            ),
            "days_repeated": {d.isoformat(): p.release.folder.name for d, p in sorted(repeated.items())},
            "privacy_zones_removed": source.privacy_zones,
        },
    )
    if plan is not None and noisy is not None:
        days = (request.date_to - request.date_from).days + 1
        privacy.epsilon, privacy.delta = plan.epsilon(settings), plan.delta(settings)  # the ledger's charge
        privacy.extra["complementary_rule"] = "not applied under differential privacy (values are noisy)"
        privacy.extra["differential_privacy"] = dp_parameters(plan, noisy, days)
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
            "previous": list(request.previous),
            "repeated_days": frozenset(repeated),
            "identifiers": identifiers,
            "differential_privacy": plan is not None,
            "dp_operator_devices": noisy.operator_devices if noisy is not None else {},
            "dp_threshold": noisy.threshold if noisy is not None else None,
        },
    )
    if plan is not None:
        built.parameters.update(dp_epsilon=settings.dp_epsilon, dp_delta=settings.dp_delta)
    return built


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
