"""Differential privacy wired into releases: noisy cells, contribution bounding, the ledger, rebuilds.

Real Delta lakes in tmp_path, real DuckDB, real OpenDP.  Noise cannot be seeded, so the assertions are
statistical with generous bounds (each far less likely to fail by chance than one in a million).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from api import create_app
from publish.datasets import GATE_CHECKS, BuildRequest, dataset_entry, register_check
from publish.dp import bound_contributions
from publish.errors import GateFailed, PublishError
from publish.ledger import PrivacyLedger, ledger_path
from publish.model import BuiltDataset
from publish.noise import DP_PLANS, noisy_cells
from publish.release import publish_release
from publish.source import open_source
from store.errors import PrivacyBudgetExhausted
from store.lake import Lake
from store.settings import Settings
from tests.publish.telemetry import DAY, T0, Fleet, fleet_lake, fleet_records, rows

#: 12 devices for 4 minutes near Haneda Innovation City: every cell stays inside the corridor's universe.
SHORT = Fleet(devices=12, minutes=4)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    days = [dataclasses.replace(SHORT, start=T0 + timedelta(days=d)) for d in range(3)]
    return fleet_lake(tmp_path / "lake", *days)


def dp_settings(tmp_path: Path, **overrides: float) -> Settings:
    values = {"dp_epsilon": 48.0, "dp_budget_epsilon": 1000.0, **overrides}
    return Settings(lake=tmp_path / "lake", releases=tmp_path / "releases", **values)  # type: ignore[arg-type]


def folder_names(settings: Settings, dataset_id: str) -> list[str]:
    folder = Path(settings.releases) / dataset_id
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def test_counts_are_noisy_within_a_statistical_bound_and_metadata_carries_epsilon(
    lake: Lake, tmp_path: Path
) -> None:
    settings = dp_settings(tmp_path)
    result = publish_release(lake, "safety-events", DAY, DAY, settings)
    rows = pq.read_table(result.folder / "safety-events.parquet").to_pylist()
    # True cells: 2 (zone, kind) cells, 12 devices (4 per operator) and 12 events each.  safety-events
    # spends 0.2 of epsilon 48 (9.6 per device-day): 0.6 of it on devices (scale L/5.76 = 0.35 per
    # operator), the rest on events (scale L*cap/3.84 = 2.6).
    true_cells = {("outside", "takeover_request"), ("road-kampachi-anamori", "disengagement")}
    assert {(r["zone"], r["kind"]) for r in rows} >= true_cells
    for row in rows:
        if (row["zone"], row["kind"]) in true_cells:
            assert abs(row["devices"] - 12) <= 5 and abs(row["events"] - 12) <= 20
        assert row["devices"] >= 10  # k on the noisy count
        assert row["events_per_100km_autonomous"] is None  # not released under DP
    privacy = json.loads((result.folder / "privacy.json").read_text())["privacy"]
    assert privacy["epsilon"] == pytest.approx(9.6) and privacy["delta"] == pytest.approx(2e-7)
    dp = privacy["differential_privacy"]
    assert dp["epsilon"] == pytest.approx(9.6) and dp["delta"] == 0.0  # what OpenDP proves
    assert dp["privacy_unit"].startswith("device-day")
    assert dp["noisy_columns"] == ["devices", "events"]
    assert dp["empty_columns"] == ["events_per_100km_autonomous"]
    assert dp["publication_threshold"] == 10 and dp["operators_count"] == 3
    budget = privacy["privacy_budget"]
    assert budget["this_release"] == {"epsilon": pytest.approx(9.6), "delta": pytest.approx(2e-7),
                                      "days_charged": ["2025-03-14"]}  # fmt: skip
    assert budget["spent_per_day"]["2025-03-14"]["epsilon"] == pytest.approx(9.6)
    assert budget["budget_epsilon_per_device_day"] == 1000.0
    package = json.loads((result.folder / "datapackage.json").read_text())
    assert package["privacy"]["epsilon"] == pytest.approx(9.6)
    assert package["privacy"]["delta"] == pytest.approx(2e-7)
    dcat = (result.folder / "dcat.jsonld").read_text()
    assert "ε = 9.6" in dcat and "differential privacy per device-day" in dcat
    assert "aggregates at least" not in dcat  # a noisy count over k is not k devices: not stated
    dictionary = (result.folder / "data_dictionary.csv").read_text(encoding="utf-8")
    assert "Differential privacy in this release: noisy" in dictionary
    assert "always empty" in dictionary


def test_many_noisy_counts_differ_from_the_truth_but_not_by_much(tmp_path: Path) -> None:
    # One minute of driving (480 m): each device-day touches about 4 cells, all kept by bounding.
    lake = fleet_lake(tmp_path / "lake", Fleet(devices=12, minutes=1))
    settings = dp_settings(tmp_path, dp_epsilon=60.0)
    result = publish_release(lake, "traffic-speed-mesh", DAY, DAY, settings)
    rows = pq.read_table(result.folder / "traffic-speed-mesh.parquet").to_pylist()
    # traffic-speed-mesh spends 0.3 of 60 = 18 per device-day, 0.7 of it on devices: scale
    # L/12.6 = 0.32 per operator.  The cells the fleet drove through hold 12 true devices (fewer where
    # bounding dropped some: a device-day keeps 4 cells); published cells hold at least k noisy ones.
    assert rows and all(r["devices"] >= 10 and r["p85_speed_kmh"] is None for r in rows)
    assert all(r["devices"] <= 12 + 15 for r in rows)  # 15 = 47 scales: p < 1e-15 per cell
    assert all(0 <= r["mean_speed_kmh"] <= 120 for r in rows)
    assert all(r["samples"] is None for r in rows)  # not released under DP (its noise would dwarf it)


def test_contribution_bounding_keeps_at_most_l_cells_per_device(tmp_path: Path) -> None:
    hours = [dataclasses.replace(SHORT, start=T0 + timedelta(hours=h)) for h in range(8)]
    lake = fleet_lake(tmp_path / "lake", *hours)
    settings = dp_settings(tmp_path)
    entry = dataset_entry("network-quality-mesh")
    plan = DP_PLANS["network-quality-mesh"]
    source = open_source(lake, DAY, DAY, settings)
    try:
        rows = plan.device_rows(source.con)
        per_device = rows.group_by("device").aggregate([("mesh_code", "count")])
        assert min(per_device["mesh_code_count"].to_pylist()) > plan.contributions_per_day
        bounded = bound_contributions(
            rows, device="device", keys=entry.key_columns, contributions=plan.contributions_per_day, seed=b"s"
        )
        counts = bounded.group_by("device").aggregate([("mesh_code", "count")])
        assert set(counts["mesh_code_count"].to_pylist()) == {plan.contributions_per_day}
        request = BuildRequest(lake, entry.spec, DAY, DAY, settings)
        report = noisy_cells(source.con, request, plan, entry.key_columns).report
    finally:
        source.con.close()
    assert report.contributions == plan.contributions_per_day
    kept = report.device_cells_in - report.device_cells_dropped_by_bounding
    assert report.device_cells_dropped_by_bounding > 0 and kept == 12 * plan.contributions_per_day


def test_a_deleted_release_is_not_refunded_and_the_day_runs_out(lake: Lake, tmp_path: Path) -> None:
    # fleet-activity and safety-events spend 0.2 of 40 = 8 per device-day each; the budget of a day is 20.
    settings = dp_settings(tmp_path, dp_epsilon=40.0, dp_budget_epsilon=20.0)
    ledger = PrivacyLedger(ledger_path(Path(settings.releases)), 20.0)
    first = publish_release(lake, "fleet-activity", DAY, DAY, settings)
    publish_release(lake, "fleet-activity", DAY + timedelta(days=1), DAY + timedelta(days=1), settings)
    assert ledger.spent(DAY).epsilon == pytest.approx(8.0)  # days compose in parallel
    shutil.rmtree(first.folder)  # someone deletes the release: its noise is out there, its charge stays
    with pytest.raises(PublishError, match="whose folder is gone"):  # and its day is not drawn again
        publish_release(lake, "fleet-activity", DAY, DAY, settings)
    publish_release(lake, "safety-events", DAY, DAY, settings)
    assert ledger.spent(DAY).epsilon == pytest.approx(16.0)
    with pytest.raises(PrivacyBudgetExhausted, match=r"exhausted for 2025-03-14.*spent 16 of 20"):
        publish_release(lake, "network-quality-mesh", DAY, DAY, settings)
    assert folder_names(settings, "network-quality-mesh") == []  # no release folder, no temporary one
    assert ledger.spent(DAY).epsilon == pytest.approx(16.0)  # nothing spent
    assert {e.state for e in ledger.entries()} == {"committed"}


def test_a_release_failing_at_the_gate_is_charged_and_a_retry_pays_again(lake: Lake, tmp_path: Path) -> None:
    """The gate judged a noisy draw: its failure is an outcome of the noise, so it is not free to retry."""
    settings = dp_settings(tmp_path)

    def refuse(built: BuiltDataset, settings: Settings) -> list[str]:
        return ["refused for the test"]

    register_check("fleet-activity", refuse)
    try:
        with pytest.raises(GateFailed, match="refused for the test"):
            publish_release(lake, "fleet-activity", DAY, DAY, settings)
    finally:
        GATE_CHECKS["fleet-activity"].remove(refuse)
    ledger = PrivacyLedger(ledger_path(Path(settings.releases)), 1000.0)
    assert [e.state for e in ledger.entries("fleet-activity")] == ["committed"]
    assert folder_names(settings, "fleet-activity") == []
    again = publish_release(lake, "fleet-activity", DAY, DAY, settings)
    assert again.version == "2025-03-14_2025-03-14-r2"
    assert ledger.spent(DAY).epsilon == pytest.approx(2 * 48.0 * 0.2)


def test_a_dp_release_is_not_rebuilt_and_a_plain_one_still_is(lake: Lake, tmp_path: Path) -> None:
    settings = dp_settings(tmp_path)
    first = publish_release(lake, "fleet-activity", DAY, DAY, settings)
    provenance = json.loads((first.folder / "provenance.json").read_text())
    assert provenance["parameters"]["dp_epsilon"] == 48.0
    with pytest.raises(PublishError, match="differential privacy.*cannot be drawn again"):
        publish_release(lake, "fleet-activity", DAY, DAY, settings, at_versions=first.source_versions)
    assert folder_names(settings, "fleet-activity") == [first.version]
    ledger = PrivacyLedger(ledger_path(Path(settings.releases)), 1000.0)
    assert len(ledger.entries("fleet-activity")) == 1
    # The day was published: a later release of it repeats those rows, draws no new noise, spends nothing.
    second = publish_release(lake, "fleet-activity", DAY, DAY, settings)
    old = pq.read_table(first.folder / "fleet-activity.parquet")
    assert pq.read_table(second.folder / "fleet-activity.parquet").equals(old)
    assert second.days_repeated == [DAY]
    assert ledger.spent(DAY).epsilon == pytest.approx(48.0 * 0.2)
    assert "privacy_budget" not in second.privacy.extra  # it charged nothing


def test_dp_off_changes_nothing(lake: Lake, tmp_path: Path) -> None:
    plain = Settings(lake=tmp_path / "lake", releases=tmp_path / "releases")
    result = publish_release(lake, "fleet-activity", DAY, DAY, plain)
    assert result.privacy.epsilon is None and "differential_privacy" not in result.privacy.extra
    assert not ledger_path(Path(plain.releases)).exists()


def test_the_catalog_page_states_the_dp_guarantee_not_k_devices(lake: Lake, tmp_path: Path) -> None:
    settings = dp_settings(tmp_path)
    publish_release(lake, "fleet-activity", DAY, DAY, settings)
    with TestClient(create_app(settings)) as client:
        english = client.get("/", params={"lang": "en"}).text
        japanese = client.get("/").text
    assert "Differential privacy per device-day (ε = 9.6)" in english
    assert "Every cell aggregates at least" not in english
    assert "端末・日単位の差分プライバシー" in japanese


def test_a_device_days_fleet_values_do_not_depend_on_the_day_before(tmp_path: Path) -> None:
    """A shuttle driving across JST midnight, in a release of both days: removing its samples before
    midnight (the neighbouring device-day) leaves its next day's DP row as it was (trips and stops are cut
    at midnight under DP; the analyst view counts the step over midnight on the later day)."""
    midnight = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)  # 00:00 JST on 2025-03-15
    records = fleet_records(Fleet(devices=1, minutes=10, start=midnight - timedelta(minutes=5)))
    after = {k: [r for r in v if r["ts"] >= midnight] for k, v in records.items()}
    plan = DP_PLANS["fleet-activity"]
    rows_of = {}
    for name, streams in (("both days", records), ("after midnight only", after)):
        lake = Lake(tmp_path / name.replace(" ", "-"))
        lake.ensure_tables()
        for stream, items in streams.items():
            if items:
                lake.append(stream, rows(stream, items))
        settings = Settings(lake=lake.root, releases=tmp_path / "r")
        day = date(2025, 3, 15)
        source = open_source(lake, day - timedelta(days=1), day, settings)  # a two-day release
        try:
            table = plan.device_rows(source.con)
        finally:
            source.con.close()
        rows_of[name] = sorted((r for r in table.to_pylist() if r["day_jst"] == day), key=repr)
    assert rows_of["both days"] == rows_of["after midnight only"]
    assert rows_of["both days"][0]["distance_km"] > 1  # about 2.4 km driven after midnight
