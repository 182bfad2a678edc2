"""The release log (publish/release_log.py) and the ledger's settlement: the audit's findings F3 to F6.

F4: deleting or moving a day's release folders reopened the day (rebuilt from the current lake, late
samples in, under the reused name ``-r1``).  F3: exact and DP releases of the same day side by side.
F5: a DP release served, then deleted, was given back its charge.  F6: a DP attempt that drew noise and
published nothing was never charged.  Real lakes, real DuckDB and OpenDP, real killed processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import publish.dp
from corridorhub.cli import cli
from publish.datasets import default_ids
from publish.errors import NothingPublishable, PublishError, ReleaseExists
from publish.ledger import PrivacyLedger, ledger_path
from publish.release import publish_release
from publish.release_log import LOG_NAME, ReleaseLog
from store.errors import PrivacyBudgetExhausted
from store.lake import Lake
from store.settings import Settings
from tests.publish.telemetry import DAY, T0, Fleet, fleet_lake, write_fleet

ROOT = Path(__file__).resolve().parents[2]
R1, R2 = "2025-03-14_2025-03-14-r1", "2025-03-14_2025-03-14-r2"
LATE_VEHICLE = Fleet(devices=1, operators=1, seed=41, device_type="car", lat=35.5500, lon=139.7400)
EPSILON = 40.0


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return fleet_lake(
        tmp_path / "lake",
        Fleet(devices=30, minutes=1),
        Fleet(devices=30, minutes=1, start=T0 + timedelta(days=1)),
    )


@pytest.fixture
def exact(tmp_path: Path) -> Settings:
    return Settings(lake=tmp_path / "lake", releases=tmp_path / "releases")


@pytest.fixture
def private(exact: Settings) -> Settings:
    return dataclasses.replace(exact, dp_epsilon=EPSILON, dp_budget_epsilon=100.0)


def folders(settings: Settings, dataset_id: str) -> list[str]:
    folder = Path(settings.releases) / dataset_id
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


# -- F4: the record of what was published is the log, not the folders ------------------------------------


def test_a_day_whose_release_was_deleted_is_refused_not_rebuilt_from_the_lake(
    lake: Lake, exact: Settings, tmp_path: Path
) -> None:
    first = publish_release(lake, "fleet-activity", DAY, DAY, exact)
    backup = tmp_path / "backup"
    shutil.copytree(first.folder, backup)
    shutil.rmtree(first.folder)
    write_fleet(lake, LATE_VEHICLE, received_at=datetime.now(UTC))  # the attack's late device
    gone = (
        rf"2025-03-14 was published by fleet-activity {R1}, whose folder is gone from "
        r"releases/fleet-activity/ \(release log release-log.json\): .* Restore the folder from a backup"
    )
    with pytest.raises(PublishError, match=gone):
        publish_release(lake, "fleet-activity", DAY, DAY, exact)
    assert folders(exact, "fleet-activity") == []  # nothing rebuilt, no name reused
    # the operator restores the folder: the day is repeated from it, byte for byte, under a new name
    shutil.copytree(backup, first.folder)
    again = publish_release(lake, "fleet-activity", DAY, DAY, exact)
    assert again.version == R2 and again.days_repeated == [DAY]
    data = "fleet-activity.parquet"
    assert (again.folder / data).read_bytes() == (backup / data).read_bytes()


def test_a_version_name_is_never_reused_even_when_its_folder_is_gone(lake: Lake, exact: Settings) -> None:
    first = publish_release(lake, "traffic-speed-mesh", DAY, DAY, exact)
    shutil.rmtree(first.folder)
    with pytest.raises(ReleaseExists, match=f"{R1} was published before .* never reused"):
        publish_release(lake, "traffic-speed-mesh", DAY, DAY, exact, version=R1)
    log = json.loads((Path(exact.releases) / LOG_NAME).read_text())
    assert log["releases"] == [
        {
            "dataset": "traffic-speed-mesh",
            "version": R1,
            "days": ["2025-03-14"],
            "mode": "exact",
            "state": "published",
            "at": log["releases"][0]["at"],
            "tmp": "",
            "received_until": "",
            "manifest_sha256": log["releases"][0]["manifest_sha256"],
        }
    ]
    assert len(log["releases"][0]["manifest_sha256"]) == 64  # recorded when placed


def test_a_copied_catalogue_carries_its_log(lake: Lake, exact: Settings, tmp_path: Path) -> None:
    """The audit's ``cp -a rel rel_del2; rm -rf rel_del2/*/2026-11-20*``: the copy is refused too."""
    publish_release(lake, "fleet-activity", DAY, DAY, exact)
    copy = tmp_path / "releases-copy"
    shutil.copytree(exact.releases, copy)
    shutil.rmtree(copy / "fleet-activity" / R1)
    with pytest.raises(PublishError, match="whose folder is gone"):
        publish_release(lake, "fleet-activity", DAY, DAY, dataclasses.replace(exact, releases=copy))


def test_release_folders_made_before_the_log_are_adopted_on_first_use(
    lake: Lake, exact: Settings, private: Settings
) -> None:
    publish_release(lake, "fleet-activity", DAY, DAY, exact)
    (Path(exact.releases) / LOG_NAME).unlink()  # a catalogue from before the log
    publish_release(lake, "safety-events", DAY + timedelta(days=1), DAY + timedelta(days=1), private)
    log = ReleaseLog(Path(exact.releases))
    assert [(e.dataset, e.version, e.days, e.mode) for e in log.entries()] == [
        ("fleet-activity", R1, ("2025-03-14",), "exact"),
        ("safety-events", "2025-03-15_2025-03-15-r1", ("2025-03-15",), "dp"),
    ]
    shutil.rmtree(Path(exact.releases) / "fleet-activity" / R1)
    with pytest.raises(PublishError, match="whose folder is gone"):
        publish_release(lake, "fleet-activity", DAY, DAY, exact)


# -- F3: one mode per day across datasets -------------------------------------------------------------


def test_a_day_published_with_dp_refuses_exact_releases_of_every_dataset(
    lake: Lake, exact: Settings, private: Settings
) -> None:
    publish_release(lake, "fleet-activity", DAY, DAY, private)
    for dataset_id in ("traffic-speed-mesh", "trips-od", "network-quality-mesh", "safety-events"):
        with pytest.raises(PublishError, match="2025-03-14 was published with differential privacy by"):
            publish_release(lake, dataset_id, DAY, DAY, exact)
    with pytest.raises(PublishError, match=r"under other rules \(dp_epsilon 40.0 then, None now"):
        publish_release(lake, "fleet-activity", DAY, DAY, exact)  # its own dataset: by its rules
    refused = (
        f"2025-03-14 was published with differential privacy by fleet-activity {R1}: a day takes one "
        "mode for every dataset, so traffic-speed-mesh may not publish it exactly"
    )
    with pytest.raises(PublishError, match=refused):
        publish_release(lake, "traffic-speed-mesh", DAY, DAY + timedelta(days=1), exact)
    assert folders(exact, "traffic-speed-mesh") == [] and folders(exact, "trips-od") == []


def test_a_day_published_exactly_refuses_dp_releases_and_charges_nothing(
    lake: Lake, exact: Settings, private: Settings
) -> None:
    publish_release(lake, "traffic-speed-mesh", DAY, DAY, exact)
    refused = (
        rf"2025-03-14 was published exactly \(without differential privacy\) by traffic-speed-mesh {R1}: "
        ".* fleet-activity may not publish it with differential privacy"
    )
    with pytest.raises(PublishError, match=refused):
        publish_release(lake, "fleet-activity", DAY, DAY, private)
    assert folders(private, "fleet-activity") == []
    assert PrivacyLedger(ledger_path(Path(private.releases)), 100.0).entries() == []
    # another day is free to take DP
    publish_release(lake, "fleet-activity", DAY + timedelta(days=1), DAY + timedelta(days=1), private)


def test_the_exhausted_budget_advice_is_true(lake: Lake, private: Settings) -> None:
    tight = dataclasses.replace(private, dp_budget_epsilon=EPSILON * 0.3)
    publish_release(lake, "network-quality-mesh", DAY, DAY, tight)
    with pytest.raises(PrivacyBudgetExhausted) as refused:
        publish_release(lake, "traffic-speed-mesh", DAY, DAY, tight)
    message = str(refused.value)
    assert "without differential privacy" not in message  # an exact release of a DP day is refused
    assert "leave the day as it is, or raise 'dp_budget_epsilon' deliberately" in message


# -- F5: a charge whose noise may be out is never given back --------------------------------------------

_KILLED = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {root!r})
    from datetime import date
    from pathlib import Path
    import publish.release, publish.release_log
    from store.lake import Lake
    from store.settings import Settings

    def die(*args, **kwargs):
        os._exit(9)

    {patch}
    settings = Settings(lake=Path({lake!r}), releases=Path({releases!r}), dp_epsilon={epsilon},
                        dp_budget_epsilon=100.0)
    day = date(2025, 3, 14)
    publish.release.publish_release(Lake(settings.lake), "fleet-activity", day, day, settings)
    """
)


def kill(lake: Lake, settings: Settings, patch: str) -> None:
    """Publish fleet-activity for DAY in another process that dies where ``patch`` says."""
    script = _KILLED.format(
        root=str(ROOT), lake=str(lake.root), releases=str(settings.releases), epsilon=EPSILON, patch=patch
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr


def test_a_release_killed_just_before_the_rename_is_dropped_from_the_log_and_still_charged(
    lake: Lake, private: Settings
) -> None:
    kill(lake, private, "publish.release.os.rename = die")  # logged as placing, still in its .tmp folder
    log = ReleaseLog(Path(private.releases))
    assert [(e.version, e.state) for e in log.entries()] == [(R1, "placing")]
    publish_release(lake, "safety-events", DAY, DAY, private)  # the next publish settles both files
    assert [(e.dataset, e.state) for e in log.entries()] == [("safety-events", "published")]
    ledger = PrivacyLedger(ledger_path(Path(private.releases)), 100.0)
    assert ledger.spent(DAY).by_dataset == pytest.approx({"fleet-activity": 8.0, "safety-events": 8.0})
    again = publish_release(lake, "fleet-activity", DAY, DAY, private)  # never seen: publishable
    assert again.version == R2 and folders(private, "fleet-activity") == [R2]
    assert ledger.spent(DAY).by_dataset["fleet-activity"] == pytest.approx(16.0)  # both draws paid


def test_a_release_killed_after_the_rename_and_deleted_keeps_its_charge(
    lake: Lake, private: Settings
) -> None:
    kill(lake, private, "publish.release_log.ReleaseLog.published = die")  # after the rename
    assert folders(private, "fleet-activity") == [R1]  # renamed into place: it may have been served
    shutil.rmtree(Path(private.releases) / "fleet-activity" / R1)  # ... and is deleted
    publish_release(lake, "safety-events", DAY, DAY, private)  # the next publish settles
    ledger = PrivacyLedger(ledger_path(Path(private.releases)), 100.0)
    assert {e.dataset: (e.version, e.state) for e in ledger.entries()} == {
        "fleet-activity": (R1, "committed"),
        "safety-events": (R1, "committed"),
    }
    assert ledger.spent(DAY).epsilon == pytest.approx(EPSILON * 0.4)
    assert [(e.version, e.state) for e in ReleaseLog(Path(private.releases)).entries("fleet-activity")] == [
        (R1, "published")
    ]
    with pytest.raises(PublishError, match=f"fleet-activity {R1}, whose folder is gone"):
        publish_release(lake, "fleet-activity", DAY, DAY, private)  # no new draw under any name
    assert ledger.spent(DAY).epsilon == pytest.approx(EPSILON * 0.4)


# -- F6: publishing nothing is an outcome of the noise ------------------------------------------------


def test_a_dp_attempt_that_publishes_nothing_is_charged(
    lake: Lake, private: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def noise_below_every_threshold(values: list[int], sensitivity: int, epsilon: float):  # type: ignore[no-untyped-def]
        return [v - 10_000 for v in values], epsilon

    monkeypatch.setattr(publish.dp, "_laplace_int", noise_below_every_threshold)
    with pytest.raises(NothingPublishable, match="its privacy budget is spent all the same"):
        publish_release(lake, "network-quality-mesh", DAY, DAY, private)
    ledger = PrivacyLedger(ledger_path(Path(private.releases)), 100.0)
    assert [(e.dataset, e.version, e.state) for e in ledger.entries()] == [
        ("network-quality-mesh", R1, "committed")
    ]
    assert ledger.spent(DAY).epsilon == pytest.approx(EPSILON * 0.3)
    monkeypatch.undo()
    retry = publish_release(lake, "network-quality-mesh", DAY, DAY, private)  # a new draw, paid again
    assert retry.version == R2
    assert ledger.spent(DAY).epsilon == pytest.approx(EPSILON * 0.6)


def test_the_mode_is_checked_again_when_a_release_is_placed(tmp_path: Path) -> None:
    """Two datasets published at once (each holds only its own lock): the second to be placed loses."""
    log = ReleaseLog(tmp_path)
    log.placing("fleet-activity", R1, ["2025-03-14"], "dp", ".tmp-a")
    with pytest.raises(PublishError, match="2025-03-14 was published with differential privacy"):
        log.placing("trips-od", R1, ["2025-03-14"], "exact", ".tmp-b")
    assert [e.dataset for e in log.entries()] == ["fleet-activity"]


def test_the_audits_deleted_folders_through_the_cli_name_each_day_and_dataset(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``rm -rf releases/*/2025-03-14*``, a late device, ``publish --all`` again: one error per dataset."""
    monkeypatch.chdir(tmp_path)
    args = ["publish", "--all", "--from", "2025-03-14", "--lake", "lake", "--releases", "releases"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    for folder in (tmp_path / "releases").glob("*/2025-03-14*"):
        shutil.rmtree(folder)
    write_fleet(lake, LATE_VEHICLE, received_at=datetime.now(UTC))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 5
    for line, dataset in zip(errors, default_ids(), strict=True):
        assert line.startswith(f"Error: {dataset}: 2025-03-14 was published by {dataset} {R1}, whose ")
        assert "Restore the folder from a backup" in line
    assert not list((tmp_path / "releases").glob("*/2025-03-14*"))


# -- N5: an earlier release is repeated only as it was published ------------------------------------------


def rewrite_without_a_row(folder: Path, dataset_id: str) -> Path:
    path = folder / f"{dataset_id}.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)
    return path


def test_an_earlier_release_whose_parquet_was_rewritten_is_not_repeated(lake: Lake, exact: Settings) -> None:
    first = publish_release(lake, "fleet-activity", DAY, DAY, exact)
    rewrite_without_a_row(first.folder, "fleet-activity")  # a tampered copy, manifest untouched
    refused = rf"Earlier release fleet-activity/{R1}: fleet-activity.parquet does not match its sha256"
    with pytest.raises(PublishError, match=refused):
        publish_release(lake, "fleet-activity", DAY, DAY, exact)
    assert folders(exact, "fleet-activity") == [R1]


def test_a_rewritten_release_with_a_matching_manifest_is_refused_by_the_log(
    lake: Lake, exact: Settings
) -> None:
    first = publish_release(lake, "fleet-activity", DAY, DAY, exact)
    path = rewrite_without_a_row(first.folder, "fleet-activity")
    manifest = json.loads((first.folder / "manifest.json").read_text(encoding="utf-8"))
    for item in manifest["files"]:
        if item["path"] == path.name:
            item["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            item["bytes"] = path.stat().st_size
    (first.folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    refused = rf"Earlier release fleet-activity/{R1}: manifest.json is not the one published"
    with pytest.raises(PublishError, match=refused):
        publish_release(lake, "fleet-activity", DAY, DAY, exact)


# -- N3: a folder of another catalogue cannot bring a second mode to a day --------------------------------


def test_a_folder_copied_in_with_another_mode_for_a_logged_day_is_refused(
    lake: Lake, exact: Settings, private: Settings, tmp_path: Path
) -> None:
    publish_release(lake, "fleet-activity", DAY, DAY, exact)
    other = dataclasses.replace(private, releases=tmp_path / "other-catalogue")
    dp = publish_release(lake, "safety-events", DAY, DAY, other)
    shutil.copytree(dp.folder, Path(exact.releases) / "safety-events" / dp.version)
    refused = (
        rf"Release folder safety-events/{R1} was published with differential privacy, but 2025-03-14 was "
        rf"published exactly .* by fleet-activity {R1} .* not adopted"
    )
    with pytest.raises(PublishError, match=refused):
        publish_release(lake, "traffic-speed-mesh", DAY, DAY, exact)
    assert [e.dataset for e in ReleaseLog(Path(exact.releases)).entries()] == ["fleet-activity"]
