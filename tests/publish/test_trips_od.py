"""trips-od against real lakes of hand-made trips between corridor zones, and the audit's attacks on it.

Each device drives in a straight line from a point in one corridor zone to a point in another (8 m/s, a
state sample every 10 s); trips of one device are 10 minutes apart, so the analyst segmentation (a gap
over 5 minutes ends a trip) makes one trip of each.  The attacker holds every release file.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from frictionless import validate

from publish.build import build_dataset
from publish.datasets import default_ids
from publish.errors import PublishError
from publish.gate import check
from publish.release import publish_release
from publish.trips_od import ALL_DESTINATIONS, TRIPS_OD, WITHOUT_DP
from store.lake import Lake
from store.settings import Settings
from tests.publish.telemetry import DAY, T0, distance_m, rows

#: A point inside each zone used (store/geo/data/corridor_zones.geojson).
POINTS = {
    "hic": (35.5467, 139.7500),
    "tenkubashi": (35.5473, 139.7544),
    "haneda-t3": (35.5442, 139.7686),
    "haneda-t1": (35.5488, 139.7834),
    "jr-kamata": (35.5625, 139.7158),
    "keikyu-kamata": (35.5612, 139.7240),
}
K = 10


@dataclasses.dataclass(frozen=True)
class Trip:
    device: int
    origin: str
    destination: str
    slot: int = 0  # the trip starts slot x 10 minutes after T0
    operator: str | None = None  # default: op{device % 3}


def state_records(trips: list[Trip], day_offset: int = 0) -> list[dict[str, Any]]:
    out = []
    for trip in trips:
        (lat0, lon0), (lat1, lon1) = POINTS[trip.origin], POINTS[trip.destination]
        steps = max(2, int(distance_m(lat0, lon0, lat1, lon1) / 80) + 1)
        start = T0 + timedelta(days=day_offset, minutes=10 * trip.slot, seconds=trip.device)
        for i in range(steps + 1):
            f = i / steps
            out.append(
                {
                    "operator": trip.operator or f"op{trip.device % 3}",
                    "device_id": f"veh-{trip.device:03d}",
                    "ts": start + timedelta(seconds=10 * i),
                    "seq": 100 * trip.slot + i,
                    "lat": lat0 + f * (lat1 - lat0),
                    "lon": lon0 + f * (lon1 - lon0),
                    "device_type": "shuttle",
                    "speed_mps": 8.0,
                    "mode": "autonomous",
                }
            )
    return out


def trips_lake(root: Path, trips: list[Trip], received_at: datetime | None = None) -> Lake:
    lake = Lake(root)
    lake.ensure_tables()
    lake.append("state", rows("state", state_records(trips), received_at))
    return lake


def shuttles(origin: str, destination: str, devices: range, slot: int = 0) -> list[Trip]:
    return [Trip(d, origin, destination, slot) for d in devices]


@pytest.fixture
def config(tmp_path: Path) -> Settings:
    return Settings(lake=tmp_path / "lake", releases=tmp_path / "releases")


def published_rows(folder: Path) -> list[dict[str, Any]]:
    return pq.read_table(folder / "trips-od.parquet").to_pylist()


def od(rows_: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r["origin_zone"], r["destination_zone"]): (r["trips"], r["devices"]) for r in rows_}


def test_trips_between_zones_are_counted_per_day_and_origin(tmp_path: Path, config: Settings) -> None:
    there = shuttles("hic", "tenkubashi", range(12))
    back = shuttles("tenkubashi", "hic", range(12), slot=2)
    lake = trips_lake(tmp_path / "lake", there + back)
    result = publish_release(lake, "trips-od", DAY, DAY, config)
    published = published_rows(result.folder)
    assert od(published) == {
        ("hic", "tenkubashi"): (12, 12),
        ("hic", ALL_DESTINATIONS): (12, 12),
        ("tenkubashi", "hic"): (12, 12),
        ("tenkubashi", ALL_DESTINATIONS): (12, 12),
    }
    assert {r["day_jst"] for r in published} == {DAY}
    # only days, zones and counts: no pseudonym, no device, no point, no time of day
    assert pq.read_schema(result.folder / "trips-od.parquet").names == [c.name for c in TRIPS_OD.columns]
    csv = (result.folder / "trips-od.csv").read_bytes().decode("utf-8")
    assert "veh-" not in csv and "op0" not in csv and "T" not in csv.split("\r\n", 1)[1]
    privacy = json.loads((result.folder / "privacy.json").read_text())["privacy"]
    assert privacy["k"] == K and privacy["space_coarsening"] == "corridor zones"


def test_a_device_seen_on_one_day_only_in_a_small_zone_pair_is_published_nowhere(
    tmp_path: Path, config: Settings
) -> None:
    """The audit's singling-out: one vehicle's only trip of the day, Kamata to Kamata, next to a busy
    corridor.  Neither its pair nor its origin's total, nor any difference of published rows, shows it."""
    busy = shuttles("hic", "tenkubashi", range(12))
    lone = [Trip(99, "jr-kamata", "keikyu-kamata", operator="solo")]
    lake = trips_lake(tmp_path / "lake", busy + lone)
    result = publish_release(lake, "trips-od", DAY, DAY, config)
    published = od(published_rows(result.folder))
    assert published == {("hic", "tenkubashi"): (12, 12), ("hic", ALL_DESTINATIONS): (12, 12)}
    assert result.privacy.cells_suppressed_k == 2  # the lone pair and the lone origin's total


def test_a_lone_trip_cannot_be_recovered_by_subtracting_published_pairs_from_their_origin_total(
    tmp_path: Path, config: Settings
) -> None:
    busy = shuttles("hic", "tenkubashi", range(12))
    lone = [Trip(99, "hic", "haneda-t3")]  # same origin as the busy pair
    lake = trips_lake(tmp_path / "lake", busy + lone)
    published = published_rows(publish_release(lake, "trips-od", DAY, DAY, config).folder)
    assert_subtraction_reveals_nothing(published)
    assert od(published) == {("hic", ALL_DESTINATIONS): (13, 13)}  # the total alone: the pair went with it


def test_device_counts_do_not_give_away_a_device_found_only_in_suppressed_pairs(
    tmp_path: Path, config: Settings
) -> None:
    """The residual's values pass k (10 devices went to T3 or T1, 10 trips), but 9 of those devices also
    drove to Tenkubashi: the origin's device count minus Tenkubashi's would show the one device that went
    only to the suppressed pairs.  The rule withholds a row so that this count is not published."""
    busy = shuttles("hic", "tenkubashi", range(12))
    t3 = shuttles("hic", "haneda-t3", range(6), slot=2)
    t1 = shuttles("hic", "haneda-t1", range(6, 9), slot=2) + [Trip(99, "hic", "haneda-t1", slot=2)]
    lake = trips_lake(tmp_path / "lake", busy + t3 + t1)
    built = build_dataset(lake, "trips-od", DAY, DAY, config)
    published = built.table.to_pylist()
    assert_subtraction_reveals_nothing(published)
    assert od(published) == {("hic", ALL_DESTINATIONS): (22, 13)}
    assert check(built, config) == []
    # the gate finds the leak on an output that publishes the pair next to the total
    leaky = pa.Table.from_pylist(
        sorted(
            [
                *published,
                {
                    "day_jst": DAY,
                    "origin_zone": "hic",
                    "destination_zone": "tenkubashi",
                    "trips": 12,
                    "devices": 12,
                },
            ],  # fmt: skip
            key=lambda r: (r["origin_zone"], r["destination_zone"]),
        ),
        schema=built.table.schema,
    )
    problems = check(dataclasses.replace(built, table=leaky), config)
    assert any("reveals 1 devices found only in suppressed cells" in p for p in problems), problems


def assert_subtraction_reveals_nothing(published: list[dict[str, Any]]) -> None:
    """The attacker's subtraction on every published total: the total minus its published pairs."""
    totals = {
        (r["day_jst"], r["origin_zone"]): r for r in published if r["destination_zone"] == ALL_DESTINATIONS
    }
    pairs: dict[tuple[Any, str], list[dict[str, Any]]] = defaultdict(list)
    for r in published:
        if r["destination_zone"] != ALL_DESTINATIONS:
            pairs[(r["day_jst"], r["origin_zone"])].append(r)
    for key, total in totals.items():
        if not pairs[key]:
            continue
        trips = total["trips"] - sum(r["trips"] for r in pairs[key])
        devices = total["devices"] - sum(r["devices"] for r in pairs[key])
        assert trips == 0 or trips >= K, (key, trips)
        assert devices <= 0 or devices >= K, (key, devices)


def test_a_late_device_changes_no_byte_of_a_day_published_before(tmp_path: Path, config: Settings) -> None:
    """Differencing across releases: a vehicle whose trips of the day upload after its first release."""
    lake = trips_lake(tmp_path / "lake", shuttles("hic", "tenkubashi", range(12)))
    first = publish_release(lake, "trips-od", DAY, DAY, config)
    late = [Trip(50, "hic", "tenkubashi", slot=3), Trip(50, "tenkubashi", "haneda-t3", slot=5)]
    lake.append("state", rows("state", state_records(late), datetime.now(UTC)))
    second = publish_release(lake, "trips-od", DAY, DAY, config)
    for name in ("trips-od.parquet", "trips-od.csv"):
        assert (first.folder / name).read_bytes() == (second.folder / name).read_bytes()
    assert second.days_repeated == [DAY]
    assert second.late_samples[DAY] == len(state_records(late))


def test_under_differential_privacy_it_is_left_out_and_every_dp_release_says_why(
    tmp_path: Path, config: Settings
) -> None:
    """An exact trips-od next to DP releases of the same vehicles would break the guarantee they state."""
    lake = trips_lake(tmp_path / "lake", shuttles("hic", "tenkubashi", range(12)))
    private = dataclasses.replace(config, dp_epsilon=1.0)
    with pytest.raises(PublishError, match="trips-od is left out of releases under differential privacy"):
        publish_release(lake, "trips-od", DAY, DAY, private)
    assert not (Path(config.releases) / "trips-od").exists()  # refused before any work: nothing spent
    assert "trips-od" not in default_ids(private) and "trips-od" in default_ids(config)
    dp = publish_release(lake, "fleet-activity", DAY, DAY, private, allow_empty=True)
    privacy = json.loads((dp.folder / "privacy.json").read_text())["privacy"]
    assert privacy["left_out_under_differential_privacy"] == {"trips-od": WITHOUT_DP}


def test_trips_over_midnight_count_on_each_day_whatever_the_range(tmp_path: Path, config: Settings) -> None:
    """A day's rows depend on that day's samples only: the same whether published alone or in a range."""
    evening = T0 + timedelta(hours=13, minutes=50)  # 23:50 JST on DAY
    records = []
    for d in range(12):
        for i in range(120):  # 20 minutes at 10 s, from HIC eastwards over midnight
            ts = evening + timedelta(seconds=10 * i)
            records.append(
                {"operator": f"op{d % 3}", "device_id": f"veh-{d:03d}", "ts": ts, "seq": i, "lat": 35.5467,
                 "lon": 139.7500 + i * 0.00015, "speed_mps": 8.0, "mode": "autonomous"}
            )  # fmt: skip
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables()
    lake.append("state", rows("state", records))
    alone = build_dataset(lake, "trips-od", DAY, DAY, config).table.to_pylist()
    both = build_dataset(lake, "trips-od", DAY, DAY + timedelta(days=1), config).table.to_pylist()
    assert [r for r in both if r["day_jst"] == DAY] == alone
    assert {r["day_jst"] for r in both} == {DAY, DAY + timedelta(days=1)}
    assert od(alone)[("hic", ALL_DESTINATIONS)] == (12, 12)


def test_its_metadata_are_those_of_every_release(tmp_path: Path, config: Settings) -> None:
    """Data dictionary in both languages, a valid Data Package, privacy figures in every metadata file."""
    lake = trips_lake(tmp_path / "lake", shuttles("hic", "tenkubashi", range(12)))
    folder = publish_release(lake, "trips-od", DAY, DAY, config).folder
    report = validate(folder / "datapackage.json")
    assert report.valid, report.to_summary()
    dictionary = (folder / "data_dictionary.csv").read_bytes().decode("utf-8")
    for column in TRIPS_OD.columns:
        assert column.title_ja in dictionary and column.description_en in dictionary
    privacy = json.loads((folder / "privacy.json").read_text())["privacy"]
    package = json.loads((folder / "datapackage.json").read_text())
    assert package["privacy"]["k"] == privacy["k"] == K
    assert package["privacy"]["cells_published"] == privacy["cells_published"] == 2
    dcat = (folder / "dcat.jsonld").read_text(encoding="utf-8")
    assert "trips-od" in dcat and "ゾーン間トリップ数" in dcat
    assert not (folder / "trips-od.geojson").exists()  # zones, not mesh cells


def test_the_gate_refuses_a_pseudonym_column(tmp_path: Path, config: Settings) -> None:
    lake = trips_lake(tmp_path / "lake", shuttles("hic", "tenkubashi", range(12)))
    built = build_dataset(lake, "trips-od", DAY, DAY, config)
    renamed = built.table.rename_columns(["day_jst", "pseudonym", *built.table.column_names[2:]])
    problems = check(dataclasses.replace(built, table=renamed), config)
    assert any("'pseudonym' has an identifier-like or coordinate name" in p for p in problems), problems


def looping_shuttle(loops: int) -> list[Trip]:
    """Device 0 (an operator of its own) shuttles hic -> tenkubashi ``loops`` times, back between them."""
    there = [Trip(0, "hic", "tenkubashi", slot=2 * i, operator="loop-co") for i in range(loops)]
    back = [Trip(0, "tenkubashi", "hic", slot=2 * i + 1, operator="loop-co") for i in range(loops - 1)]
    return there + back


def test_a_pair_whose_trips_are_one_looping_shuttle_is_suppressed(tmp_path: Path, config: Settings) -> None:
    """The audit's finding 8: 10 devices drove hic -> tenkubashi, 34 trips, 25 of them (74 %) one looping
    shuttle.  k and operator dominance (74 % < 80 %) pass, but the count describes that one vehicle's
    service: no device may hold more than half of a row's trips (the residual of a total included)."""
    lake = trips_lake(tmp_path / "lake", looping_shuttle(25) + shuttles("hic", "tenkubashi", range(1, 10)))
    built = build_dataset(lake, "trips-od", DAY, DAY, config)
    assert od(built.table.to_pylist()) == {}  # the pair and hic's total: 34 trips, 10 devices, 74 % one
    assert built.privacy.cells_suppressed_dominance == 2
    assert built.privacy.extra["device_dominance_share"] == 0.5
    # the gate refuses the row on its own: one device holds 74 % of its trips
    row = {"day_jst": DAY, "origin_zone": "hic", "destination_zone": "tenkubashi", "trips": 34, "devices": 10}
    leaky = pa.Table.from_pylist([row], schema=built.table.schema)
    problems = check(dataclasses.replace(built, table=leaky), config)
    assert any("one device holds 74% > device dominance share 50%" in p for p in problems), problems


def test_a_shuttle_holding_half_of_a_pairs_trips_or_less_leaves_it_published(
    tmp_path: Path, config: Settings
) -> None:
    lake = trips_lake(tmp_path / "lake", looping_shuttle(9) + shuttles("hic", "tenkubashi", range(1, 10)))
    built = build_dataset(lake, "trips-od", DAY, DAY, config)
    assert od(built.table.to_pylist())[("hic", "tenkubashi")] == (18, 10)  # the shuttle: 9 of 18
    assert check(built, config) == []
