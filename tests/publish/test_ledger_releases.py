"""One privacy ledger across datasets and releases, and releases interrupted between two datasets.

Real lakes, real DuckDB and OpenDP; the hard interruptions are real processes killed (``os._exit``) at
the worst moments: after the budget is charged and before the folder exists, and after the folder is in
place and before the charge is committed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import publish.release
from corridorhub.cli import cli
from publish.errors import PublishError
from publish.ledger import PrivacyLedger, ledger_path
from publish.release import publish_release
from store.errors import PrivacyBudgetExhausted
from store.lake import Lake
from store.settings import Settings
from tests.publish.telemetry import DAY, T0, Fleet, fleet_lake

ROOT = Path(__file__).resolve().parents[2]
DAY2 = DAY + timedelta(days=1)
DATASETS = ("network-quality-mesh", "traffic-speed-mesh", "safety-events", "fleet-activity")
SHARES = {"network-quality-mesh": 0.3, "traffic-speed-mesh": 0.3, "safety-events": 0.2, "fleet-activity": 0.2}
EPSILON = 40.0


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return fleet_lake(
        tmp_path / "lake",
        Fleet(devices=30, minutes=1),
        Fleet(devices=30, minutes=1, start=T0 + timedelta(days=1)),
    )


def settings_for(tmp_path: Path, budget: float = 100.0) -> Settings:
    return Settings(
        lake=tmp_path / "lake", releases=tmp_path / "releases", dp_epsilon=EPSILON, dp_budget_epsilon=budget
    )


def versions(settings: Settings, dataset_id: str) -> list[str]:
    folder = Path(settings.releases) / dataset_id
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def test_two_releases_of_four_datasets_add_up_per_day(lake: Lake, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    for dataset_id in DATASETS:  # release 1: DAY
        publish_release(lake, dataset_id, DAY, DAY, settings)
    last = None
    for dataset_id in DATASETS:  # release 2: DAY (repeated, free) and DAY2 (new)
        last = publish_release(lake, dataset_id, DAY, DAY2, settings)
        assert last.days_repeated == [DAY]
    ledger = PrivacyLedger(ledger_path(Path(settings.releases)), 100.0)
    for day in (DAY, DAY2):  # each day: the four shares of dp_epsilon, once
        spent = ledger.spent(day)
        assert spent.epsilon == pytest.approx(EPSILON)
        assert spent.by_dataset == pytest.approx({d: EPSILON * s for d, s in SHARES.items()})
    assert len(ledger.entries()) == 8 and {e.state for e in ledger.entries()} == {"committed"}
    assert last is not None
    privacy = json.loads((last.folder / "privacy.json").read_text())["privacy"]
    budget = privacy["privacy_budget"]
    assert budget["this_release"]["days_charged"] == ["2025-03-15"]  # DAY was repeated: not charged
    assert budget["this_release"]["epsilon"] == pytest.approx(EPSILON * 0.2)
    assert budget["spent_per_day"]["2025-03-15"]["epsilon"] == pytest.approx(EPSILON)
    assert budget["max_spent_epsilon"] == pytest.approx(EPSILON)
    provenance = json.loads((last.folder / "provenance.json").read_text())
    assert provenance["privacy"]["privacy_budget"] == budget


def test_a_dataset_over_the_days_budget_is_refused_by_name(lake: Lake, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, budget=EPSILON * 0.7)  # room for the two mesh datasets only
    for dataset_id in DATASETS[:2]:
        publish_release(lake, dataset_id, DAY, DAY, settings)
    with pytest.raises(PrivacyBudgetExhausted) as refused:
        publish_release(lake, "safety-events", DAY, DAY, settings)
    assert str(refused.value).startswith(
        "safety-events: privacy budget exhausted for 2025-03-14: this release needs epsilon 8 per "
        "device-day, that day has spent 24 of 28 (4 left; network-quality-mesh 12, traffic-speed-mesh 12)"
    )
    assert versions(settings, "safety-events") == []
    assert PrivacyLedger(ledger_path(Path(settings.releases)), 28.0).spent(DAY).epsilon == pytest.approx(24.0)


def test_an_interrupted_multi_dataset_publish_charges_what_it_published(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the third dataset is being written: the first two are published and charged, the
    third is charged (its noise was drawn) but not published, the fourth is neither."""
    real = publish.release.write_manifest

    def interrupted(folder: Path, dataset_id: str, version: str) -> object:
        if dataset_id == "safety-events":
            raise KeyboardInterrupt
        return real(folder, dataset_id, version)

    monkeypatch.setattr(publish.release, "write_manifest", interrupted)
    monkeypatch.chdir(tmp_path)
    env = {"CORRIDORHUB_DP_EPSILON": str(EPSILON), "CORRIDORHUB_DP_BUDGET_EPSILON": "100"}
    args = ["publish", "--from", "2025-03-14", "--lake", "lake", "--releases", "releases"]
    args += [a for d in DATASETS for a in ("--dataset", d)]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1 and "Aborted!" in result.output  # click's answer to Ctrl-C
    settings = settings_for(tmp_path)
    ledger = PrivacyLedger(ledger_path(Path(settings.releases)), 100.0)
    charged = {e.dataset: (e.version, e.state) for e in ledger.entries()}
    assert charged == {
        "network-quality-mesh": ("2025-03-14_2025-03-14-r1", "committed"),
        "traffic-speed-mesh": ("2025-03-14_2025-03-14-r1", "committed"),
        "safety-events": ("2025-03-14_2025-03-14-r1", "committed"),
    }
    for dataset_id in DATASETS[:2]:
        assert versions(settings, dataset_id) == ["2025-03-14_2025-03-14-r1"]
    assert versions(settings, "safety-events") == [] and versions(settings, "fleet-activity") == []
    assert ledger.spent(DAY).epsilon == pytest.approx(EPSILON * 0.8)


_KILLED = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {root!r})
    from datetime import date
    from pathlib import Path
    import publish.release
    from publish.ledger import PrivacyLedger
    from store.lake import Lake
    from store.settings import Settings

    def die(*args, **kwargs):
        os._exit(9)

    if {moment!r} == "before the build":
        PrivacyLedger.drawn = die
    elif {moment!r} == "before the folder":
        publish.release.write_release = die
    else:
        PrivacyLedger.commit = die
    settings = Settings(lake=Path({lake!r}), releases=Path({releases!r}), dp_epsilon={epsilon},
                        dp_budget_epsilon=100.0)
    day = date(2025, 3, 14)
    publish.release.publish_release(Lake(settings.lake), "fleet-activity", day, day, settings)
    """
)


@pytest.mark.parametrize(
    ("moment", "published", "charged"),
    [
        ("before the build", False, False),
        ("before the folder", False, True),
        ("after the folder", True, True),
    ],
)
def test_a_killed_release_leaves_the_ledger_charged_for_what_it_drew(
    lake: Lake, tmp_path: Path, moment: str, published: bool, charged: bool
) -> None:
    """Given back only when the build never read the lake; once noise is drawn the charge stands."""
    settings = settings_for(tmp_path)
    script = _KILLED.format(
        root=str(ROOT), moment=moment, lake=str(lake.root), releases=str(settings.releases), epsilon=EPSILON
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr
    ledger = PrivacyLedger(ledger_path(Path(settings.releases)), 100.0)
    left = "drawn" if charged else "reserved"
    assert [(e.dataset, e.state) for e in ledger.entries()] == [("fleet-activity", left)]
    assert (versions(settings, "fleet-activity") == ["2025-03-14_2025-03-14-r1"]) is published
    # The next release (of another dataset) settles the reservation the dead process left.
    publish_release(lake, "safety-events", DAY, DAY, settings)
    states = {e.dataset: e.state for e in ledger.entries()}
    if charged:
        assert states == {"fleet-activity": "committed", "safety-events": "committed"}
        assert ledger.spent(DAY).epsilon == pytest.approx(EPSILON * 0.4)
    else:
        assert states == {"safety-events": "committed"}
        assert ledger.spent(DAY).epsilon == pytest.approx(EPSILON * 0.2)
        publish_release(lake, "fleet-activity", DAY, DAY, settings)  # its day is publishable again
        assert ledger.spent(DAY).epsilon == pytest.approx(EPSILON * 0.4)
    if charged and not published:  # its day was never published: a new draw, charged again, new name
        again = publish_release(lake, "fleet-activity", DAY, DAY, settings)
        assert again.version == "2025-03-14_2025-03-14-r2"
        assert ledger.spent(DAY).epsilon == pytest.approx(EPSILON * 0.6)


# -- N4: a lost ledger is rebuilt from the DP release folders, or the publish is refused ----------------


def test_a_lost_ledger_adopts_the_charges_the_dp_folders_state(lake: Lake, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    publish_release(lake, "traffic-speed-mesh", DAY, DAY, settings)
    ledger_path(Path(settings.releases)).rename(tmp_path / "ledger-moved-away.json")
    second = publish_release(lake, "fleet-activity", DAY, DAY, settings)
    spent = PrivacyLedger(ledger_path(Path(settings.releases)), 100.0).spent(DAY)
    truth = EPSILON * (SHARES["traffic-speed-mesh"] + SHARES["fleet-activity"])
    assert spent.epsilon == pytest.approx(truth)
    budget = json.loads((second.folder / "privacy.json").read_text())["privacy"]["privacy_budget"]
    assert budget["spent_per_day"]["2025-03-14"]["epsilon"] == pytest.approx(truth)


def test_a_lost_ledger_and_a_gone_dp_folder_refuse_the_day(lake: Lake, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    first = publish_release(lake, "traffic-speed-mesh", DAY, DAY, settings)
    ledger_path(Path(settings.releases)).unlink()
    shutil.rmtree(first.folder)
    refused = (
        rf"2025-03-14 was published with differential privacy by traffic-speed-mesh {first.version} "
        r"\(release log\), but the privacy ledger privacy-ledger.json has no charge for it"
    )
    with pytest.raises(PublishError, match=refused):
        publish_release(lake, "fleet-activity", DAY, DAY, settings)
    assert versions(settings, "fleet-activity") == []
