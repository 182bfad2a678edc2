"""The release-differencing attack and the closed-day rule that stops it (publish/closure.py).

The audit's attack: publish a day, let one vehicle's samples for it arrive late, publish again, and read
the late vehicle's path from the cells that changed or disappeared.  Here the attacker holds every
release file and diffs them; the rule must leave nothing to diff.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from publish.closure import closes_at
from publish.datasets import default_ids
from publish.errors import DayNotClosed, PublishError
from publish.release import publish_release
from store.ingest_status import write_status
from store.lake import Lake
from store.settings import Settings
from tests.publish.telemetry import DAY, T0, Fleet, fleet_lake, fleet_records, write_fleet

#: Cells in the corridor where the late vehicle drives (a lane of its own, as in telemetry.Fleet).
LATE_VEHICLE = Fleet(devices=1, operators=1, seed=41, device_type="car", lat=35.5500, lon=139.7400)


@pytest.fixture
def config(tmp_path: Path) -> Settings:
    return Settings(lake=tmp_path / "lake", releases=tmp_path / "releases")


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    # 12 shuttles and 12 robots of 3 operators: many cells pass k = 10
    return fleet_lake(tmp_path / "lake", Fleet(devices=12), Fleet(devices=12, seed=3, device_type="robot"))


def rows_of(folder: Path, dataset: str) -> list[dict]:
    return pq.read_table(folder / f"{dataset}.parquet").to_pylist()


def test_every_dataset_published_by_default_is_attacked_here() -> None:
    assert set(default_ids()) == {
        "network-quality-mesh",
        "traffic-speed-mesh",
        "safety-events",
        "fleet-activity",
        "trips-od",
    }


@pytest.mark.parametrize("dataset", default_ids())
def test_a_late_vehicle_cannot_be_read_from_the_difference_of_two_releases(
    lake: Lake, config: Settings, dataset: str
) -> None:
    first = publish_release(lake, dataset, DAY, DAY, config)
    # the late vehicle: its morning on DAY arrives now, after the day was published
    write_fleet(lake, LATE_VEHICLE, received_at=datetime.now(UTC))
    second = publish_release(lake, dataset, DAY, DAY, config)
    before, after = rows_of(first.folder, dataset), rows_of(second.folder, dataset)
    assert before == after  # no cell changed, none withheld, none added: nothing to diff
    for name in (f"{dataset}.parquet", f"{dataset}.csv"):
        assert (first.folder / name).read_bytes() == (second.folder / name).read_bytes()
    late = sum(len(v) for v in fleet_records(LATE_VEHICLE).values())
    assert second.late_samples == {DAY: late}


def test_a_day_is_built_from_what_had_arrived_when_it_was_first_published(
    lake: Lake, config: Settings
) -> None:
    """Late data that arrives before a day's first release is in it; what arrives after, never."""
    before = datetime.now(UTC)
    write_fleet(lake, LATE_VEHICLE, received_at=before - timedelta(minutes=1))  # arrived before
    first = publish_release(lake, "fleet-activity", DAY, DAY, config)
    assert {r["device_type"] for r in rows_of(first.folder, "fleet-activity")} >= {"all"}
    total = next(r for r in rows_of(first.folder, "fleet-activity") if r["device_type"] == "all")
    assert total["active_devices"] == 25  # 12 shuttles, 12 robots and the car
    provenance = json.loads((first.folder / "provenance.json").read_text())
    assert datetime.fromisoformat(provenance["received_until"]) >= before
    assert provenance["parameters"]["days_first_published"] == [DAY.isoformat()]


def test_a_range_mixing_published_and_new_days_repeats_the_old_and_builds_the_new(
    lake: Lake, config: Settings
) -> None:
    next_day = DAY + timedelta(days=1)
    first = publish_release(lake, "fleet-activity", DAY, DAY, config)
    write_fleet(lake, LATE_VEHICLE, received_at=datetime.now(UTC))
    write_fleet(lake, Fleet(devices=12, seed=8, start=T0 + timedelta(days=1)), received_at=datetime.now(UTC))
    both = publish_release(lake, "fleet-activity", DAY, next_day, config)
    rows = rows_of(both.folder, "fleet-activity")
    assert [r for r in rows if r["day_jst"] == DAY] == rows_of(first.folder, "fleet-activity")
    assert [r["active_devices"] for r in rows if r["day_jst"] == next_day and r["device_type"] == "all"] == [
        12
    ]
    assert both.days_repeated == [DAY]
    assert both.privacy.extra["days_repeated"] == {DAY.isoformat(): first.version}


def test_a_device_seen_only_in_late_data_appears_nowhere(lake: Lake, config: Settings) -> None:
    first = publish_release(lake, "safety-events", DAY, DAY, config)
    lone = dataclasses.replace(LATE_VEHICLE, seed=99, device_type="robot", events_per_device=20)
    write_fleet(lake, lone, received_at=datetime.now(UTC))
    second = publish_release(lake, "safety-events", DAY, DAY, config)
    assert rows_of(second.folder, "safety-events") == rows_of(first.folder, "safety-events")


def test_a_day_republished_with_another_k_is_refused_by_name(lake: Lake, config: Settings) -> None:
    publish_release(lake, "fleet-activity", DAY, DAY, config)
    other = dataclasses.replace(config, publish_k=5)
    refused = r"2025-03-14 was published by fleet-activity .*\(k 10 then, 5 now\)"
    with pytest.raises(PublishError, match=refused):
        publish_release(lake, "fleet-activity", DAY, DAY, other)
    assert sorted(p.name for p in (Path(config.releases) / "fleet-activity").iterdir()) == [
        ".lock",
        "2025-03-14_2025-03-14-r1",
        "latest",
    ]


def test_a_day_that_has_not_closed_is_refused_with_its_closing_time(tmp_path: Path, config: Settings) -> None:
    now = datetime.now(UTC)
    yesterday = (now + timedelta(hours=9)).date() - timedelta(days=1)
    lake = fleet_lake(tmp_path / "lake", Fleet(devices=12, start=datetime.combine(yesterday, T0.timetz())))
    with pytest.raises(DayNotClosed, match=rf"{yesterday} is not closed yet: .* it closes at .* JST"):
        publish_release(lake, "fleet-activity", yesterday, yesterday, config)
    assert closes_at(yesterday, 48) > now
    assert not (Path(config.releases) / "fleet-activity").exists() or not any(
        p.is_dir() for p in (Path(config.releases) / "fleet-activity").iterdir()
    )
    # a hub that waits no hours (a demo) may publish it
    publish_release(
        lake, "fleet-activity", yesterday, yesterday, dataclasses.replace(config, publish_lateness_h=0)
    )


def test_a_running_ingest_cut_off_from_its_broker_holds_back_a_first_publication(
    lake: Lake, config: Settings
) -> None:
    now = datetime.now(UTC).timestamp()
    status = {"client_id": "ingest-a", "written_at": now, "connected": False, "stopped": False}
    write_status(Path(lake.root), status)
    with pytest.raises(PublishError, match="ingest worker 'ingest-a' is running but not connected"):
        publish_release(lake, "fleet-activity", DAY, DAY, config)
    write_status(Path(lake.root), {**status, "stopped": True})  # shut down cleanly: nothing is in flight
    publish_release(lake, "fleet-activity", DAY, DAY, config)


def test_no_release_file_holds_an_absolute_path_of_this_machine(
    lake: Lake, config: Settings, tmp_path: Path
) -> None:
    zones = tmp_path / "private" / "zones.geojson"
    zones.parent.mkdir()
    zones.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": "depot"},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [
                                [[139.70, 35.60], [139.701, 35.60], [139.701, 35.601], [139.70, 35.60]]
                            ],
                        },
                    }
                ],
            }
        )
    )
    settings = dataclasses.replace(config, privacy_zones_file=zones)
    folders = [publish_release(lake, d, DAY, DAY, settings).folder for d in default_ids()]
    absolute = re.compile(rb"(?<![\w.:/])/(?:tmp|home|root|work|var|usr|etc|opt|mnt|srv|run)/")
    for folder in folders:
        for path in folder.iterdir():
            data = path.read_bytes()
            assert str(tmp_path).encode() not in data, f"{path.name} holds the host path {tmp_path}"
            assert not absolute.search(data), f"{path.name} holds an absolute path"
        provenance = json.loads((folder / "provenance.json").read_text())
        assert len(provenance["parameters"]["privacy_zones_sha256"]) == 64


# N1: a day takes one cut, for every dataset


def test_a_dataset_publishing_a_day_later_reads_only_what_had_arrived_at_the_days_first_release(
    tmp_path: Path, lake: Lake, config: Settings
) -> None:
    publish_release(lake, "fleet-activity", DAY, DAY, config)  # the day's first publication: its cut
    write_fleet(lake, LATE_VEHICLE, received_at=datetime.now(UTC))  # arrives after the cut
    late = publish_release(lake, "network-quality-mesh", DAY, DAY, config)  # its first release of DAY
    # the same dataset built from a lake that never received the late vehicle
    clean = fleet_lake(tmp_path / "clean", Fleet(devices=12), Fleet(devices=12, seed=3, device_type="robot"))
    ref = dataclasses.replace(config, lake=tmp_path / "clean", releases=tmp_path / "clean-releases")
    reference = publish_release(clean, "network-quality-mesh", DAY, DAY, ref)
    assert late.privacy.cells_before == reference.privacy.cells_before
    assert rows_of(late.folder, "network-quality-mesh") == rows_of(reference.folder, "network-quality-mesh")


def test_a_nothing_to_publish_attempt_fixes_the_days_cut_too(lake: Lake, config: Settings) -> None:
    """Its message states the cell counts: a later attempt must count the same cells, not the late ones."""
    strict = dataclasses.replace(config, publish_k=10_000)
    with pytest.raises(PublishError, match="Nothing to publish") as first:
        publish_release(lake, "fleet-activity", DAY, DAY, strict)
    write_fleet(lake, LATE_VEHICLE, received_at=datetime.now(UTC))
    with pytest.raises(PublishError, match="Nothing to publish") as again:
        publish_release(lake, "fleet-activity", DAY, DAY, strict)
    cells = re.compile(r"all (\d+) cells")
    assert cells.search(str(again.value)).group(1) == cells.search(str(first.value)).group(1)  # type: ignore[union-attr]
    log = json.loads((Path(config.releases) / "release-log.json").read_text(encoding="utf-8"))
    assert list(log["cuts"]) == [DAY.isoformat()]
