"""Releases: layout, versions, latest, provenance, determinism, later releases, no partial release."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from publish.datasets import GATE_CHECKS, register_check
from publish.errors import GateFailed, NoData, NothingPublishable, ReleaseExists, UnknownDataset
from publish.manifest import read_manifest
from publish.model import BuiltDataset
from publish.release import latest_version, list_versions, publish_release
from publish.source import read_source_versions
from store.lake import Lake
from store.settings import Settings
from tests.publish.telemetry import DAY, T0, Fleet, fleet_lake, fleet_records, write_fleet


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def config(tmp_path: Path) -> Settings:
    return Settings(lake=tmp_path / "lake", releases=tmp_path / "releases")


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return fleet_lake(tmp_path / "lake", Fleet(devices=12))


def leftovers(config: Settings, dataset_id: str) -> list[str]:
    folder = Path(config.releases) / dataset_id
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock") if folder.exists() else []


def test_a_release_is_a_versioned_folder_with_provenance_and_latest(lake: Lake, config: Settings) -> None:
    result = publish_release(lake, "traffic-speed-mesh", DAY, DAY, config)
    assert result.version == "2025-03-14_2025-03-14-r1"
    assert result.folder == Path(config.releases) / "traffic-speed-mesh" / result.version
    names = {p.name for p in result.folder.iterdir()}
    assert {
        "traffic-speed-mesh.parquet",
        "traffic-speed-mesh.csv",
        "provenance.json",
        "manifest.json",
    } <= names
    assert set(read_manifest(result.folder)) == names - {"manifest.json"}  # provenance listed too
    provenance = json.loads((result.folder / "provenance.json").read_text())
    assert "source_versions" not in provenance  # kept by the hub, next to the lake
    assert read_source_versions(lake, "traffic-speed-mesh", result.version) == {
        "event": 1,
        "network": 1,
        "state": 1,
    }
    assert provenance["date_from"] == provenance["date_to"] == "2025-03-14"
    assert provenance["parameters"]["k"] == 10 and provenance["code_version"]
    assert provenance["privacy"]["cells_published"] == result.rows
    assert latest_version(Path(config.releases), "traffic-speed-mesh") == result.version
    assert list_versions(Path(config.releases), "traffic-speed-mesh") == [result.version]


def test_parquet_and_csv_hold_the_same_rows(lake: Lake, config: Settings) -> None:
    result = publish_release(lake, "fleet-activity", DAY, DAY, config)
    parquet = pq.read_table(result.folder / "fleet-activity.parquet").to_pylist()
    with open(result.folder / "fleet-activity.csv", encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(parquet) == result.rows
    for row, expected in zip(rows, parquet, strict=True):
        assert row["device_type"] == expected["device_type"]
        assert int(row["active_devices"]) == expected["active_devices"]
        assert float(row["distance_km"]) == expected["distance_km"]


def test_rebuilding_from_the_same_versions_gives_the_same_data_files(lake: Lake, config: Settings) -> None:
    first = publish_release(lake, "network-quality-mesh", DAY, DAY, config)
    # more data arrives for the next day; the rebuild reads the versions the first release recorded
    write_fleet(lake, Fleet(devices=12, seed=3, start=T0 + timedelta(days=1)))
    again = publish_release(lake, "network-quality-mesh", DAY, DAY, config, at_versions=first.source_versions)
    assert again.version == "2025-03-14_2025-03-14-r2"
    for name in ("network-quality-mesh.parquet", "network-quality-mesh.csv", "network-quality-mesh.geojson"):
        assert sha256(first.folder / name) == sha256(again.folder / name), name
    assert latest_version(Path(config.releases), "network-quality-mesh") == again.version


def test_a_later_release_repeats_a_day_as_it_was_first_published(lake: Lake, config: Settings) -> None:
    first = publish_release(lake, "fleet-activity", DAY, DAY, config)
    # late data for the released day (12 robots, received now), and a new day
    next_day = T0 + timedelta(days=1)
    write_fleet(lake, Fleet(devices=12, seed=6, device_type="robot"), received_at=datetime.now(UTC))
    write_fleet(lake, Fleet(devices=12, seed=7, start=next_day))
    second = publish_release(lake, "fleet-activity", DAY, DAY + timedelta(days=1), config)
    old = pq.read_table(first.folder / "fleet-activity.parquet").to_pylist()
    new = pq.read_table(second.folder / "fleet-activity.parquet").to_pylist()
    assert [r for r in new if r["day_jst"] == DAY] == old  # the day as it was, neither subset nor change
    assert {r["device_type"] for r in old} == {"all", "shuttle"}
    assert {r["device_type"] for r in new if r["day_jst"] != DAY} == {"all", "shuttle"}
    assert second.days_repeated == [DAY]
    robots = sum(len(v) for v in fleet_records(Fleet(devices=12, seed=6, device_type="robot")).values())
    assert second.late_samples == {DAY: robots}
    late = json.loads((Path(lake.root) / "_hub" / "publish" / "late-data.json").read_text())
    assert late["fleet-activity"][DAY.isoformat()]["late_samples"] == robots


def test_versions_are_immutable(lake: Lake, config: Settings) -> None:
    publish_release(lake, "fleet-activity", DAY, DAY, config, version="first")
    with pytest.raises(ReleaseExists, match="fleet-activity/first exists already"):
        publish_release(lake, "fleet-activity", DAY, DAY, config, version="first")
    assert leftovers(config, "fleet-activity") == ["first", "latest"]


def test_a_failing_gate_leaves_nothing_behind(lake: Lake, config: Settings) -> None:
    def refuse(built: BuiltDataset, settings: Settings) -> list[str]:
        return ["row 7 is too risky"]

    register_check("safety-events", refuse)
    try:
        with pytest.raises(GateFailed, match="Privacy gate refused safety-events: row 7 is too risky"):
            publish_release(lake, "safety-events", DAY, DAY, config)
    finally:
        GATE_CHECKS["safety-events"].remove(refuse)
    assert leftovers(config, "safety-events") == []


def test_nothing_publishable_and_no_data_leave_nothing_behind(lake: Lake, config: Settings) -> None:
    strict = dataclasses.replace(config, publish_k=50)
    with pytest.raises(NothingPublishable, match=r"all 2 cells were suppressed \(2 under k=50"):
        publish_release(lake, "fleet-activity", DAY, DAY, strict)
    with pytest.raises(NoData, match="No data for fleet-activity from 2025-03-20 to 2025-03-21"):
        publish_release(lake, "fleet-activity", DAY + timedelta(days=6), DAY + timedelta(days=7), config)
    assert leftovers(config, "fleet-activity") == []
    empty = publish_release(lake, "fleet-activity", DAY, DAY, strict, allow_empty=True)
    assert empty.rows == 0


def test_an_error_while_writing_removes_the_temporary_folder(lake: Lake, config: Settings) -> None:
    # a secret setting whose value would land in the files: export refuses after writing some of them
    leaky = dataclasses.replace(config, ckan_api_key="fleet-activity")
    with pytest.raises(Exception, match="would contain the value of a secret setting"):
        publish_release(lake, "fleet-activity", DAY, DAY, leaky)
    assert leftovers(config, "fleet-activity") == []


def test_a_stale_temporary_folder_is_cleaned_up(lake: Lake, config: Settings) -> None:
    stale = Path(config.releases) / "fleet-activity" / ".tmp-killed"
    stale.mkdir(parents=True)
    (stale / "half.parquet").write_bytes(b"PAR1")
    publish_release(lake, "fleet-activity", DAY, DAY, config)
    assert not stale.exists()


def test_the_withdrawn_trajectories_sample_is_refused_by_name(lake: Lake, config: Settings) -> None:
    with pytest.raises(UnknownDataset, match="trajectories-sample was withdrawn .* trips-od instead"):
        publish_release(lake, "trajectories-sample", DAY, DAY, config)
    assert not (Path(config.releases) / "trajectories-sample").exists()
