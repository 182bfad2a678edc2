"""The four aggregate datasets built from a real lake: values, k, date cut, privacy zones, rebuilds."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from publish.build import build_dataset
from publish.datasets import DATASETS, ENTRIES, Derivation, Use, default_ids, derive
from publish.errors import BadDateRange, NoData, UnknownDataset, UnsafeColumn
from publish.gate import check
from publish.rules import check_derivations, raw_lake_columns
from store.geo import jis_mesh
from store.lake import Lake
from store.settings import Settings
from tests.publish.telemetry import (
    DAY,
    DEG_LAT_PER_M,
    LAT0,
    LON0,
    T0,
    Fleet,
    fleet_lake,
    fleet_records,
    rows,
    write_fleet,
)

AGGREGATES = ("network-quality-mesh", "traffic-speed-mesh", "safety-events", "fleet-activity", "trips-od")
NEVER = {"operator", "device_id", "seq", "detail", "extra", "cell_id", "odometer_m", "lat", "lon", "ts"}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    # 12 devices of 3 operators drive together; 3 more of one operator drive alone further east.
    return fleet_lake(
        tmp_path_factory.mktemp("lake"), Fleet(devices=12), Fleet(devices=3, seed=1, lon=139.76)
    )


def settings_for(tmp_path: Path, **kw: object) -> Settings:
    return Settings(lake=tmp_path / "lake", releases=tmp_path / "releases", **kw)  # type: ignore[arg-type]


def test_registry_has_the_aggregates_with_documented_columns() -> None:
    assert set(AGGREGATES) <= set(DATASETS)
    assert set(AGGREGATES) <= set(default_ids())
    for dataset_id in AGGREGATES:
        spec, entry = DATASETS[dataset_id], ENTRIES[dataset_id]
        assert spec.title_ja and spec.title_en and spec.keywords_ja and spec.keywords_en
        assert all(c.title_ja and c.title_en and c.description_ja and c.description_en for c in spec.columns)
        assert all(c.unit for c in spec.columns if c.kind == "measure" and c.name != "kind")
        assert not NEVER & {c.name for c in spec.columns}
        assert entry.aggregate and set(entry.key_columns) <= {c.name for c in spec.columns}
        check_derivations(spec, entry.derivations)  # every column has an allowed derivation


def test_a_derivation_from_a_dropped_or_dominance_only_column_is_refused() -> None:
    spec = DATASETS["fleet-activity"]
    derivations = dict(ENTRIES["fleet-activity"].derivations)
    derivations["distance_km"] = derive(Use.STATISTIC, "state.odometer_m")
    derivations["device_type"] = derive(Use.AS_IS, "state.operator")
    with pytest.raises(UnsafeColumn) as caught:
        check_derivations(spec, derivations)
    assert "state.odometer_m as statistic, but its publish rule is drop" in str(caught.value)
    assert "state.operator as as_is, but its publish rule is dominance_only" in str(caught.value)
    del derivations["active_devices"]
    with pytest.raises(UnsafeColumn, match="'active_devices' of fleet-activity has no declared derivation"):
        check_derivations(spec, derivations)
    assert "detail" in raw_lake_columns() and "kind" not in raw_lake_columns()
    assert isinstance(derivations["autonomous_share"], Derivation)


@pytest.mark.parametrize("dataset_id", AGGREGATES)
def test_every_published_cell_has_k_devices_and_the_report_adds_up(
    lake: Lake, tmp_path: Path, dataset_id: str
) -> None:
    built = build_dataset(lake, dataset_id, DAY, DAY, settings_for(tmp_path))
    p = built.privacy
    assert built.table.num_rows == p.cells_published > 0
    suppressed = p.cells_suppressed_k + p.cells_suppressed_dominance + p.cells_suppressed_complementary
    assert p.cells_before == p.cells_published + suppressed
    assert built.table.schema == built.spec.schema
    count = "active_devices" if dataset_id == "fleet-activity" else "devices"
    assert min(built.table.column(count).to_pylist()) >= 10
    assert built.source_versions == {"state": 1, "event": 1, "network": 1}
    keys = ENTRIES[dataset_id].key_columns
    rows = list(zip(*(built.table.column(k).to_pylist() for k in keys), strict=True))
    assert rows == sorted(rows)  # deterministic order


def test_network_cells_match_the_samples_and_the_lonely_devices_are_suppressed(
    lake: Lake, tmp_path: Path
) -> None:
    built = build_dataset(lake, "network-quality-mesh", DAY, DAY, settings_for(tmp_path))
    rows = built.table.to_pylist()
    # the 3 devices further east never reach k: none of their cells is published
    east = {jis_mesh(LAT0 + 80 * i * DEG_LAT_PER_M, 139.76, 5) for i in range(0, 360, 3)}
    assert not east & {r["mesh_code"] for r in rows}
    levels = {r["mesh_level"] for r in rows}
    assert levels == {3, 5}
    first = min((r for r in rows if r["mesh_level"] == 5), key=lambda r: (r["hour_start"], r["mesh_code"]))
    assert first["hour_start"] == T0 and first["devices"] == 12
    assert (
        0 <= first["nr_share"] <= 1
        and first["rsrp_dbm_p10"] <= first["rsrp_dbm_median"] <= first["rsrp_dbm_p90"]
    )


def test_fleet_activity_distance_hours_and_total_row(lake: Lake, tmp_path: Path) -> None:
    built = build_dataset(lake, "fleet-activity", DAY, DAY, settings_for(tmp_path))
    rows = {r["device_type"]: r for r in built.table.to_pylist()}
    assert set(rows) == {"all", "shuttle"}
    # 15 devices x 359 steps of 80 m; 10 s apart
    assert rows["all"]["active_devices"] == 15
    assert rows["all"]["distance_km"] == pytest.approx(15 * 359 * 80 / 1000, rel=1e-3)
    assert rows["all"]["operating_hours"] == pytest.approx(15 * 359 * 10 / 3600, abs=1e-3)
    assert rows["all"]["autonomous_share"] == pytest.approx(330 / 360, abs=1e-4)


def test_safety_rates_use_the_autonomous_distance_of_the_zone_day(lake: Lake, tmp_path: Path) -> None:
    built = build_dataset(lake, "safety-events", DAY, DAY, settings_for(tmp_path))
    rows = built.table.to_pylist()
    assert {r["kind"] for r in rows} == {"disengagement", "takeover_request"}
    autonomous_km = 15 * 330 * 80 / 1000  # steps whose later sample is autonomous
    for row in rows:
        assert row["events"] == 15 and row["devices"] == 15
        assert row["events_per_100km_autonomous"] == pytest.approx(15 / (autonomous_km / 100), rel=1e-3)


def test_the_range_is_cut_in_japan_time(tmp_path: Path) -> None:
    # 23:30 JST on DAY - 1 to 00:30 JST on DAY: half of the drive on each Japan-time day
    late = Fleet(devices=10, minutes=60, start=T0 - timedelta(hours=10, minutes=30), events_per_device=0)
    lake = fleet_lake(tmp_path / "lake", late)
    settings = settings_for(tmp_path, publish_k=2)
    day = build_dataset(lake, "fleet-activity", DAY, DAY, settings).table.to_pylist()
    before = build_dataset(lake, "fleet-activity", DAY - timedelta(days=1), DAY - timedelta(days=1), settings)
    both = build_dataset(lake, "fleet-activity", DAY - timedelta(days=1), DAY, settings)
    assert [r["day_jst"] for r in day] == [DAY, DAY]
    assert {r["day_jst"] for r in before.table.to_pylist()} == {DAY - timedelta(days=1)}
    assert both.table.num_rows == 4
    with pytest.raises(NoData, match="No data for fleet-activity from 2025-03-16 to 2025-03-16"):
        build_dataset(lake, "fleet-activity", DAY + timedelta(days=2), DAY + timedelta(days=2), settings)


def test_bad_ids_and_ranges_are_refused(lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(UnknownDataset, match="'nope': choose one of network-quality-mesh, "):
        build_dataset(lake, "nope", DAY, DAY, settings_for(tmp_path))
    with pytest.raises(BadDateRange, match="reversed: --from 2025-03-14 is after --to 2025-03-13"):
        build_dataset(lake, "fleet-activity", DAY, DAY - timedelta(days=1), settings_for(tmp_path))


def test_points_in_privacy_zones_are_removed_before_aggregation(lake: Lake, tmp_path: Path) -> None:
    # a zone over the first 2 km of the shared drive
    south, north = LAT0 - 0.001, LAT0 + 2000 * DEG_LAT_PER_M
    ring = [[LON0 - 0.01, south], [LON0 + 0.01, south], [LON0 + 0.01, north], [LON0 - 0.01, north]]
    zones = tmp_path / "zones.geojson"
    zones.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": "depot"},
                        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                    }
                ],
            }
        )
    )
    plain = build_dataset(lake, "traffic-speed-mesh", DAY, DAY, settings_for(tmp_path))
    cut = build_dataset(
        lake, "traffic-speed-mesh", DAY, DAY, settings_for(tmp_path, privacy_zones_file=zones)
    )
    inside = {jis_mesh(LAT0 + m * DEG_LAT_PER_M, LON0, 5) for m in range(0, 1800, 50)}
    assert inside & set(plain.table.column("mesh_code").to_pylist())
    assert not inside & set(cut.table.column("mesh_code").to_pylist())
    assert cut.privacy.extra["privacy_zones_removed"] == 1


def test_a_rebuild_at_the_recorded_versions_ignores_later_data(tmp_path: Path) -> None:
    lake = fleet_lake(tmp_path / "lake", Fleet(devices=12))
    settings = settings_for(tmp_path)
    first = build_dataset(lake, "traffic-speed-mesh", DAY, DAY, settings)
    write_fleet(lake, Fleet(devices=12, seed=7, start=T0 + timedelta(minutes=5)))
    later = build_dataset(lake, "traffic-speed-mesh", DAY, DAY, settings)
    again = build_dataset(lake, "traffic-speed-mesh", DAY, DAY, settings, at_versions=first.source_versions)
    assert later.source_versions != first.source_versions
    assert not later.table.equals(first.table)
    assert again.table.equals(first.table) and again.source_versions == first.source_versions
    assert isinstance(again.table, pa.Table)


def test_settings_decide_k(lake: Lake, tmp_path: Path) -> None:
    strict = build_dataset(
        lake, "fleet-activity", DAY, DAY, dataclasses.replace(settings_for(tmp_path), publish_k=16)
    )
    assert strict.table.num_rows == 0 and strict.privacy.cells_suppressed_k == 2


def test_a_percentile_only_one_operator_measured_is_left_empty(tmp_path: Path) -> None:
    """Dominance of a statistic's own values: every cell passes k and dominance on its samples, but only
    op0's 4 devices report RSRP, so the RSRP percentiles would be op0's alone (one operator's values
    decide a median): they are left empty and counted; the other measures stay."""
    records = fleet_records(Fleet(devices=12))
    network = [r | {"rsrp_dbm": None} if r["operator"] != "op0" else r for r in records["network"]]
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables()
    lake.append("network", rows("network", network))
    config = settings_for(tmp_path)
    built = build_dataset(lake, "network-quality-mesh", DAY, DAY, config)
    table = built.table
    assert table.num_rows > 0
    for column in ("rsrp_dbm_p10", "rsrp_dbm_median", "rsrp_dbm_p90"):
        assert set(table.column(column).to_pylist()) == {None}, column
        assert built.privacy.extra["statistics_withheld"][column] == table.num_rows
    assert None not in table.column("sinr_db_median").to_pylist()
    assert check(built, config) == []
    # the gate finds a percentile put back over op0's values alone
    i = table.column_names.index("rsrp_dbm_median")
    leaky = table.set_column(i, "rsrp_dbm_median", pa.array([-90.0] * table.num_rows, pa.float64()))
    problems = check(dataclasses.replace(built, table=leaky), config)
    assert any("rsrp_dbm_median over rsrp_dbm: 4 distinct devices < k=10" in p for p in problems), problems
