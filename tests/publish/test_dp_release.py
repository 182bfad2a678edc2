"""Differential privacy wired into releases: noisy cells, contribution bounding, the ledger, rebuilds.

Real Delta lakes in tmp_path, real DuckDB, real OpenDP.  Noise cannot be seeded, so the assertions are
statistical with generous bounds (each far less likely to fail by chance than one in a million).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

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
from tests.publish.telemetry import DAY, T0, Fleet, fleet_lake

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
    # True cells: 2 (zone, kind) cells, 12 devices and 12 events each.  Noise: devices and events share
    # epsilon 48 (24 each): scale L/24 = 1/6 for devices, L*cap/24 = 5/6 for events.
    true_cells = {("outside", "takeover_request"), ("road-kampachi-anamori", "disengagement")}
    assert {(r["zone"], r["kind"]) for r in rows} >= true_cells
    for row in rows:
        if (row["zone"], row["kind"]) in true_cells:
            assert abs(row["devices"] - 12) <= 5 and abs(row["events"] - 12) <= 20
        assert row["devices"] >= 10  # k on the noisy count
        assert row["events_per_100km_autonomous"] is None  # not released under DP
    privacy = json.loads((result.folder / "privacy.json").read_text())["privacy"]
    assert privacy["epsilon"] == 48.0 and privacy["delta"] == pytest.approx(1e-6)
    dp = privacy["differential_privacy"]
    assert dp["epsilon"] == pytest.approx(48.0) and dp["delta"] == 0.0  # what OpenDP proves
    assert dp["noisy_columns"] == ["devices", "events"]
    assert dp["empty_columns"] == ["events_per_100km_autonomous"]
    assert privacy["privacy_budget"]["remaining_epsilon"] == pytest.approx(952.0)
    package = json.loads((result.folder / "datapackage.json").read_text())
    assert package["privacy"]["epsilon"] == 48.0 and package["privacy"]["delta"] == pytest.approx(1e-6)
    dcat = (result.folder / "dcat.jsonld").read_text()
    assert "ε = 48" in dcat
    dictionary = (result.folder / "data_dictionary.csv").read_text(encoding="utf-8")
    assert "Differential privacy in this release: noisy" in dictionary
    assert "always empty" in dictionary


def test_many_noisy_counts_differ_from_the_truth_but_not_by_much(lake: Lake, tmp_path: Path) -> None:
    settings = dp_settings(tmp_path, dp_epsilon=60.0)
    result = publish_release(lake, "traffic-speed-mesh", DAY, DAY, settings)
    rows = pq.read_table(result.folder / "traffic-speed-mesh.parquet").to_pylist()
    # Three queries share epsilon 60: scale L/20 = 96/20 = 4.8 for devices.  The cells the fleet drove
    # through hold 12 true devices; published cells hold at least k noisy ones.
    assert rows and all(r["devices"] >= 10 and r["p85_speed_kmh"] is None for r in rows)
    assert all(abs(r["devices"] - 12) <= 80 for r in rows)  # 80 = 16.7 scales: p < 1e-7 per cell
    assert all(0 <= r["mean_speed_kmh"] <= 120 for r in rows)
    sampled = [r for r in rows if r["samples"] > 0]
    assert any(r["devices"] != 12 for r in rows)  # noise (p of all equal << 1e-6 over ~100 cells)
    assert sampled, "the fleet's own cells are published"


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
        _, report = noisy_cells(source.con, request, plan, entry.key_columns)
    finally:
        source.con.close()
    assert report.contributions == plan.contributions_per_day
    kept = report.device_cells_in - report.device_cells_dropped_by_bounding
    assert report.device_cells_dropped_by_bounding > 0 and kept == 12 * plan.contributions_per_day


def test_the_ledger_spends_until_exhausted_then_refuses_before_building(lake: Lake, tmp_path: Path) -> None:
    settings = dp_settings(tmp_path, dp_epsilon=40.0, dp_budget_epsilon=100.0)
    ledger = PrivacyLedger(ledger_path(Path(settings.releases), "fleet-activity"), 100.0)
    for offset in (0, 1):
        day = DAY + timedelta(days=offset)
        publish_release(lake, "fleet-activity", day, day, settings)
    assert ledger.spent("fleet-activity")[0] == pytest.approx(80.0)
    before = folder_names(settings, "fleet-activity")
    third = DAY + timedelta(days=2)
    with pytest.raises(PrivacyBudgetExhausted, match=r"privacy budget exhausted.*spent 80 of 100"):
        publish_release(lake, "fleet-activity", third, third, settings)
    assert folder_names(settings, "fleet-activity") == before  # no release folder, no temporary one
    assert ledger.spent("fleet-activity")[0] == pytest.approx(80.0)  # nothing spent
    assert [e.state for e in ledger.entries("fleet-activity")] == ["committed", "committed"]


def test_a_release_failing_at_the_gate_spends_nothing(lake: Lake, tmp_path: Path) -> None:
    settings = dp_settings(tmp_path)

    def refuse(built: BuiltDataset, settings: Settings) -> list[str]:
        return ["refused for the test"]

    register_check("fleet-activity", refuse)
    try:
        with pytest.raises(GateFailed, match="refused for the test"):
            publish_release(lake, "fleet-activity", DAY, DAY, settings)
    finally:
        GATE_CHECKS["fleet-activity"].remove(refuse)
    ledger = PrivacyLedger(ledger_path(Path(settings.releases), "fleet-activity"), 1000.0)
    assert ledger.entries("fleet-activity") == [] and folder_names(settings, "fleet-activity") == []
    publish_release(lake, "fleet-activity", DAY, DAY, settings)  # the budget is all there
    assert ledger.spent("fleet-activity")[0] == pytest.approx(48.0)


def test_a_dp_release_is_not_rebuilt_and_a_plain_one_still_is(lake: Lake, tmp_path: Path) -> None:
    settings = dp_settings(tmp_path)
    first = publish_release(lake, "fleet-activity", DAY, DAY, settings)
    provenance = json.loads((first.folder / "provenance.json").read_text())
    assert provenance["parameters"]["dp_epsilon"] == 48.0
    with pytest.raises(PublishError, match="differential privacy.*cannot be drawn again"):
        publish_release(lake, "fleet-activity", DAY, DAY, settings, at_versions=first.source_versions)
    assert folder_names(settings, "fleet-activity") == [first.version]
    ledger = PrivacyLedger(ledger_path(Path(settings.releases), "fleet-activity"), 1000.0)
    assert len(ledger.entries("fleet-activity")) == 1
    # The day was published: a later release of it repeats those rows, draws no new noise, spends nothing.
    second = publish_release(lake, "fleet-activity", DAY, DAY, settings)
    old = pq.read_table(first.folder / "fleet-activity.parquet")
    assert pq.read_table(second.folder / "fleet-activity.parquet").equals(old)
    assert second.days_repeated == [DAY]
    assert ledger.spent("fleet-activity")[0] == pytest.approx(48.0)


def test_dp_off_changes_nothing(lake: Lake, tmp_path: Path) -> None:
    plain = Settings(lake=tmp_path / "lake", releases=tmp_path / "releases")
    result = publish_release(lake, "fleet-activity", DAY, DAY, plain)
    assert result.privacy.epsilon is None and "differential_privacy" not in result.privacy.extra
    assert not ledger_path(Path(plain.releases), "fleet-activity").exists()
