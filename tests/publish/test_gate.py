"""The privacy gate on built datasets: a good one passes; each kind of bad output is named exactly."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from publish.build import build_dataset
from publish.datasets import GATE_CHECKS, register_check
from publish.gate import check
from publish.model import BuiltDataset
from store.geo import mesh_bounds
from store.lake import Lake
from store.settings import Settings
from tests.publish.telemetry import DAY, Fleet, fleet_lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return fleet_lake(
        tmp_path_factory.mktemp("lake"), Fleet(devices=12), Fleet(devices=3, seed=1, lon=139.76)
    )


@pytest.fixture
def config(tmp_path: Path) -> Settings:
    return Settings(lake=tmp_path / "lake", releases=tmp_path / "releases")


def built(lake: Lake, dataset_id: str, config: Settings) -> BuiltDataset:
    return build_dataset(lake, dataset_id, DAY, DAY, config)


def with_table(b: BuiltDataset, table: pa.Table) -> BuiltDataset:
    return dataclasses.replace(b, table=table)


def set_column(table: pa.Table, name: str, values: list[object]) -> pa.Table:
    i = table.column_names.index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


@pytest.mark.parametrize(
    "dataset_id",
    ["network-quality-mesh", "traffic-speed-mesh", "safety-events", "fleet-activity", "trips-od"],
)
def test_what_the_builder_makes_passes(lake: Lake, config: Settings, dataset_id: str) -> None:
    assert check(built(lake, dataset_id, config), config) == []


def test_identifier_and_free_text_columns_fail(lake: Lake, config: Settings) -> None:
    b = built(lake, "safety-events", config)
    renamed = b.table.rename_columns(["day_jst", "device_id", *b.table.column_names[2:]])
    assert any("'device_id' is a raw lake column" in f for f in check(with_table(b, renamed), config))
    text = set_column(b.table, "zone", ["the driver said the brake felt soft again today"] * b.table.num_rows)
    assert any("'zone' holds free text" in f for f in check(with_table(b, text), config))
    named = set_column(b.table, "zone", ["veh-0-003"] * b.table.num_rows)
    assert any("operator or device names: veh-0-003" in f for f in check(with_table(b, named), config))


def test_cells_under_k_and_dominated_cells_fail(lake: Lake, config: Settings) -> None:
    b = built(lake, "fleet-activity", config)
    strict = check(b, dataclasses.replace(config, publish_k=16))
    assert "column 'active_devices': 2 rows with fewer than k=16 devices" in strict
    assert "row day_jst=2025-03-14 device_type=all: 15 distinct devices < k=16" in strict
    # op0 has 5 of the 15 devices: above a 30 % share
    failures = check(b, dataclasses.replace(config, publish_dominance=0.3))
    assert any("one operator holds" in f and "> dominance share 30%" in f for f in failures)
    lying = set_column(b.table, "active_devices", [15, 14])
    assert any(
        "active_devices=14 but 15 devices contributed" in f for f in check(with_table(b, lying), config)
    )
    bare = dataclasses.replace(b, internal={})
    assert "cannot verify k and dominance: the built dataset carries no contributions" in check(bare, config)


def test_a_total_that_reveals_a_suppressed_cell_by_subtraction_fails(lake: Lake, config: Settings) -> None:
    b = built(lake, "network-quality-mesh", config)
    rows = b.table.to_pylist()
    parent = next(r for r in rows if r["mesh_level"] == 3)
    children = [
        r
        for r in rows
        if r["mesh_level"] == 5
        and r["mesh_code"] // 100 == parent["mesh_code"]
        and r["hour_start"] == parent["hour_start"]
    ]
    # add the cells of the 3 lonely devices (suppressed) into the parent's contributions
    contributions = b.internal["contributions"]
    lonely = pa.table(
        {
            "hour_start": pa.array([parent["hour_start"]] * 3, contributions.schema.field("hour_start").type),
            "mesh_code": pa.array([parent["mesh_code"] * 100 + 44] * 3, pa.int64()),
            "device": ["x/a", "x/b", "x/c"],
            "operator": ["x"] * 3,
            "weight": [1.0, 1.0, 1.0],
        }
    )
    internal = dict(b.internal, contributions=pa.concat_tables([contributions, lonely]))
    failures = check(dataclasses.replace(b, internal=internal), config)
    assert children, "the fixture publishes 250 m cells under the 1 km cell"
    assert any(
        "minus the published rows below it reveals 1 suppressed cells: 3 distinct devices" in f
        for f in failures
    )


def test_times_and_cells_finer_than_allowed_fail(lake: Lake, config: Settings) -> None:
    b = built(lake, "network-quality-mesh", config)
    shifted = [t + timedelta(minutes=15) for t in b.table.column("hour_start").to_pylist()]
    failures = check(with_table(b, set_column(b.table, "hour_start", shifted)), config)
    assert any("'hour_start'" in f and "times finer than PT1H" in f for f in failures)
    codes = b.table.column("mesh_code").to_pylist()
    finer = [c * 10 + 1 if len(str(c)) == 10 else c for c in codes]
    failures = check(with_table(b, set_column(b.table, "mesh_code", finer)), config)
    assert any("is level 6, finer than the allowed level 5" in f for f in failures)


def test_a_cell_inside_a_privacy_zone_fails(lake: Lake, config: Settings, tmp_path: Path) -> None:
    b = built(lake, "traffic-speed-mesh", config)
    code = next(c for c in b.table.column("mesh_code").to_pylist() if len(str(c)) == 10)
    south, west, north, east = mesh_bounds(code)
    ring = [
        [west - 1e-4, south - 1e-4],
        [east + 1e-4, south - 1e-4],
        [east + 1e-4, north + 1e-4],
        [west - 1e-4, north + 1e-4],
    ]
    zones = tmp_path / "zones.geojson"
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
    }
    zones.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    failures = check(b, dataclasses.replace(config, privacy_zones_file=zones))
    assert f"mesh cell {code} lies inside a privacy zone" in failures


def test_rows_an_earlier_release_did_not_publish_identically_fail(lake: Lake, config: Settings) -> None:
    from publish.release import publish_release

    b = built(lake, "fleet-activity", config)
    publish_release(lake, "fleet-activity", DAY, DAY, config)
    assert check(b, config) == []
    changed = set_column(b.table, "distance_km", [1.0, 1.0])
    failures = check(with_table(b, changed), config)
    assert any(
        "2025-03-14: row" in f and "is not one release 2025-03-14_2025-03-14-r1 published for that day" in f
        for f in failures
    )
    fewer = check(with_table(b, b.table.slice(0, 1)), config)  # a subset of the day is refused too
    assert any(
        "1 row(s) release 2025-03-14_2025-03-14-r1 published for that day are missing" in f for f in fewer
    )


def test_registered_checks_run_for_their_dataset(lake: Lake, config: Settings) -> None:
    def refuse(b: BuiltDataset, s: Settings) -> list[str]:
        return [f"re-identification risk too high for {b.spec.id}"]

    register_check("fleet-activity", refuse)
    try:
        assert check(built(lake, "fleet-activity", config), config) == [
            "re-identification risk too high for fleet-activity"
        ]
    finally:
        GATE_CHECKS["fleet-activity"].remove(refuse)
