"""What a release's metadata can tell about the data (the audit's findings 1, 2, 7 and 9).

Every file of a release counts, not only the data files: privacy.json, provenance.json, datapackage.json,
dcat.jsonld, ckan_package.json and the manifest are read by the same attacker.  The tests publish
neighbouring inputs through the real release path (real Delta lakes, DuckDB, the gate, the files) and
compare every file of the two releases byte for byte.  The clock of ``publish.release`` is frozen so that
the release time (the only field that does not come from the data) is the same in both; nothing else is
left out of the comparison.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import publish.release
from api import create_app
from publish.datasets import default_ids
from publish.release import publish_release
from publish.source import read_source_versions
from store.lake import Lake
from store.settings import Settings
from tests.publish.telemetry import DAY, Fleet, fleet_lake, write_fleet
from tests.publish.test_closed_days import LATE_VEHICLE
from tests.publish.test_dp_membership import DATASETS as DP_DATASETS
from tests.publish.test_dp_membership import _lakes, fixed_noise  # noqa: F401 (a fixture)

#: The release time both publishes of a comparison share (after every sample the tests write).
FROZEN = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)


class _FrozenClock(datetime):
    @classmethod
    def now(cls, tz: object = None) -> _FrozenClock:  # type: ignore[override]
        return cls.fromtimestamp(FROZEN.timestamp(), UTC)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(publish.release, "datetime", _FrozenClock)
    yield


def release_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_same_files(a: Path, b: Path) -> None:
    first, second = release_files(a), release_files(b)
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert not differing, f"{differing} differ: e.g. {_first_difference(a, b, differing[0])}"


def _first_difference(a: Path, b: Path, name: str) -> str:
    left, right = (p.joinpath(name).read_text(encoding="utf-8", errors="replace") for p in (a, b))
    for x, y in zip(left.splitlines(), right.splitlines(), strict=False):
        if x != y:
            return f"{name}: {x.strip()!r} != {y.strip()!r}"
    return f"{name}: lengths differ"


# -- F1: under differential privacy, nothing true in the metadata -------------------------------------------


@pytest.mark.parametrize("dataset_id", DP_DATASETS)
@pytest.mark.usefixtures("fixed_noise", "frozen_clock")
def test_one_device_more_changes_no_byte_of_a_dp_release_metadata_included(
    dataset_id: str, tmp_path: Path
) -> None:
    """With the noise fixed, a lake with one device more must give the same release, every file of it:
    any count of the true data in privacy.json (device-cells in, dropped by bounding, non-empty cells) or
    in the metadata that copies it would tell the two apart with certainty."""
    lakes = _lakes(tmp_path / "lakes")
    folders, api = {}, {}
    for name in ("balanced", "plus one"):
        settings = Settings(
            lake=Path(lakes[name].root),
            releases=tmp_path / name / "releases",
            dp_epsilon=50.0,
            dp_budget_epsilon=100.0,
        )
        folders[name] = publish_release(lakes[name], dataset_id, DAY, DAY, settings).folder
        with TestClient(create_app(settings)) as client:
            api[name] = client.get(f"/v1/datasets/{dataset_id}").json()
    assert_same_files(folders["balanced"], folders["plus one"])
    assert api["balanced"] == api["plus one"]
    privacy = json.loads((folders["balanced"] / "privacy.json").read_text())["privacy"]
    dp = privacy["differential_privacy"]
    assert not {"device_cells_in", "device_cells_dropped_by_bounding", "cells_before"} & set(dp)


# -- F2 and F9: a repeated day's release reveals nothing of the data that arrived after ----------------------


def _republish_with_and_without_late_data(
    lake: Lake, dataset_id: str, settings: Settings, tmp_path: Path
) -> tuple[Path, Path, Path]:
    """Publish DAY (r1); then republish it twice from copies of the release folder: once as the lake was,
    once after a late vehicle's samples of DAY arrived.  Returns r1 and the two r2 folders."""
    first = publish_release(lake, dataset_id, DAY, DAY, settings, allow_empty=True)
    other = dataclasses.replace(settings, releases=tmp_path / "releases-after-late-data")
    shutil.copytree(settings.releases, other.releases)
    without = publish_release(lake, dataset_id, DAY, DAY, settings, allow_empty=True)
    write_fleet(lake, LATE_VEHICLE, received_at=datetime.now(UTC))  # before the frozen release time
    with_late = publish_release(lake, dataset_id, DAY, DAY, other, allow_empty=True)
    assert without.version == with_late.version == first.version.replace("-r1", "-r2")
    assert with_late.late_samples and with_late.days_repeated == [DAY]
    return first.folder, without.folder, with_late.folder


@pytest.mark.parametrize("dataset_id", default_ids())
@pytest.mark.usefixtures("frozen_clock")
def test_late_data_changes_no_byte_of_a_release_repeating_its_day(dataset_id: str, tmp_path: Path) -> None:
    lake = fleet_lake(tmp_path / "lake", Fleet(devices=12), Fleet(devices=12, seed=3, device_type="robot"))
    settings = Settings(lake=Path(lake.root), releases=tmp_path / "releases")
    first, without, with_late = _republish_with_and_without_late_data(lake, dataset_id, settings, tmp_path)
    assert_same_files(without, with_late)
    # the data files are the first release's; the counts cover no day (this release publishes none first)
    for name in (f"{dataset_id}.parquet", f"{dataset_id}.csv"):
        assert (first / name).read_bytes() == (with_late / name).read_bytes()
    privacy = json.loads((with_late / "privacy.json").read_text())["privacy"]
    assert privacy["days_counted"] == [] and privacy["cells_before"] == 0
    assert privacy["days_repeated"] == {DAY.isoformat(): first.name}
    assert json.loads((first / "privacy.json").read_text())["privacy"]["days_counted"] == [DAY.isoformat()]


@pytest.mark.parametrize("dataset_id", DP_DATASETS)
@pytest.mark.usefixtures("fixed_noise", "frozen_clock")
def test_under_dp_late_data_changes_no_byte_of_a_release_repeating_its_day(
    dataset_id: str, tmp_path: Path
) -> None:
    lake = fleet_lake(tmp_path / "lake", Fleet(devices=12))
    settings = Settings(
        lake=Path(lake.root), releases=tmp_path / "releases", dp_epsilon=50.0, dp_budget_epsilon=100.0
    )
    first, without, with_late = _republish_with_and_without_late_data(lake, dataset_id, settings, tmp_path)
    assert (first / f"{dataset_id}.parquet").read_bytes() == (
        with_late / f"{dataset_id}.parquet"
    ).read_bytes()
    assert_same_files(without, with_late)


def test_the_delta_versions_read_are_kept_by_the_hub_not_published(tmp_path: Path) -> None:
    """F9: a release's Delta table versions count the lake's commits, late data included: the hub keeps
    them (for rebuilds) next to the lake, and no release file names them."""
    lake = fleet_lake(tmp_path / "lake", Fleet(devices=12))
    settings = Settings(lake=Path(lake.root), releases=tmp_path / "releases")
    result = publish_release(lake, "fleet-activity", DAY, DAY, settings)
    assert read_source_versions(lake, "fleet-activity", result.version) == result.source_versions
    for name, content in release_files(result.folder).items():
        assert b"source_versions" not in content and b"sourceVersions" not in content, name
    again = publish_release(lake, "fleet-activity", DAY, DAY, settings, at_versions=result.source_versions)
    assert (again.folder / "fleet-activity.parquet").read_bytes() == (
        result.folder / "fleet-activity.parquet"
    ).read_bytes()


# -- F7: DP descriptions state what holds under DP, with the threshold applied -------------------------------


def test_dp_descriptions_state_the_threshold_applied_and_no_k_guarantee(tmp_path: Path) -> None:
    lake = fleet_lake(tmp_path / "lake", Fleet(devices=12, minutes=4))
    # a small epsilon: the noise is wide, and the threshold that keeps empty cells out is far above k = 10
    settings = Settings(
        lake=lake.root, releases=tmp_path / "releases", dp_epsilon=4.0, dp_budget_epsilon=10.0
    )
    result = publish_release(lake, "traffic-speed-mesh", DAY, DAY, settings, allow_empty=True)
    threshold = result.privacy.extra["differential_privacy"]["publication_threshold"]
    assert threshold > settings.publish_k
    package = json.loads((result.folder / "datapackage.json").read_text())
    ckan = json.loads((result.folder / "ckan_package.json").read_text())
    dcat = json.loads((result.folder / "dcat.jsonld").read_text())["@graph"][0]
    texts = {
        "datapackage description": package["description"],
        "datapackage description_ja": package["description_ja"],
        "ckan notes": ckan["notes"],
        **{f"dcat {d['@language']}": d["@value"] for d in dcat["dct:description"]},
    }
    for where, text in texts.items():
        assert "with fewer than k devices" not in text and "端末数が k 未満のセル" not in text, where
        assert "are suppressed" not in text and "秘匿しています" not in text, where
        assert str(threshold) in text, where
    csv = next(r for r in package["resources"] if r["type"] == "table")
    fields = {f["name"]: f for f in csv["schema"]["fields"]}
    assert "always at least k" not in fields["devices"]["description"]
    with TestClient(create_app(settings)) as client:
        english = client.get("/", params={"lang": "en"}).text
        japanese = client.get("/").text
    assert f"noisy device count is at least {threshold}" in english
    assert f"at least {settings.publish_k}" not in english
    assert f"ノイズを加えた端末数が {threshold} 以上" in japanese
