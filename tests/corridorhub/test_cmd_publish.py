"""``corridorhub publish`` through CliRunner on a real lake: releases, and one clear line per error."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from corridorhub.cli import cli
from tests.publish.telemetry import Fleet, fleet_lake


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.chdir(tmp_path)  # no corridorhub.toml of the developer's
    fleet_lake(tmp_path / "lake", Fleet(devices=12))
    return str(tmp_path / "lake"), str(tmp_path / "releases")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["publish", *args])


def test_publish_one_dataset(paths: tuple[str, str]) -> None:
    lake, releases = paths
    result = run(
        "--dataset", "fleet-activity", "--from", "2025-03-14", "--lake", lake, "--releases", releases
    )
    assert result.exit_code == 0, result.output
    assert "fleet-activity 2025-03-14_2025-03-14-r1: 2 rows, 0 of 2 cells suppressed (k=10" in result.output
    assert (
        Path(releases) / "fleet-activity" / "2025-03-14_2025-03-14-r1" / "fleet-activity.parquet"
    ).is_file()


def test_publish_all_with_a_bom_then_a_longer_range(paths: tuple[str, str]) -> None:
    lake, releases = paths
    result = run(
        "--all",
        "--from",
        "2025-03-14",
        "--to",
        "2025-03-14",
        "--csv-bom",
        "--lake",
        lake,
        "--releases",
        releases,
    )
    published = sorted(p.name for p in Path(releases).iterdir())
    assert published == [
        "fleet-activity",
        "network-quality-mesh",
        "release-log.json",  # what was published, beside the datasets (docs/OPEN_DATA.md)
        "release-log.json.lock",
        "safety-events",
        "traffic-speed-mesh",
        "trips-od",
    ]
    assert result.exit_code == 0, result.output
    csv_file = Path(releases) / "fleet-activity" / "2025-03-14_2025-03-14-r1" / "fleet-activity.csv"
    assert csv_file.read_bytes().startswith(b"\xef\xbb\xbf")
    again = run("--all", "--from", "2025-03-14", "--lake", lake, "--releases", releases, "--to", "2025-03-15")
    assert again.exit_code == 0, again.output
    assert "r1" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dataset", "nope", "--from", "2025-03-14"],
            "Error: Unknown dataset 'nope': choose one of network-quality-mesh, traffic-speed-mesh, "
            "safety-events, fleet-activity, trips-od",
        ),
        (
            ["--dataset", "fleet-activity", "--from", "2025-03-15", "--to", "2025-03-14"],
            "Error: The date range is reversed: --from 2025-03-15 is after --to 2025-03-14",
        ),
        (
            ["--dataset", "fleet-activity", "--from", "2025-04-01"],
            "Error: No data for fleet-activity from 2025-04-01 to 2025-04-01 (JST)",
        ),
        (
            ["--dataset", "fleet-activity", "--from", "2025-04-01"],
            "(tables read: state at version 1, event at version 1, network at version 1)\n",
        ),
        (
            ["--dataset", "trajectories-sample", "--from", "2025-03-14"],
            "Error: trajectories-sample was withdrawn and is not built any more: an audit",
        ),
        (["--from", "2025-03-14"], "Give --dataset ID (repeatable) or --all"),
        (["--all"], "Give --from DATE"),
        (["--all", "--from", "14/03/2025"], "'14/03/2025' is not a date such as 2025-03-14"),
    ],
)
def test_bad_input_gives_one_clear_line(paths: tuple[str, str], args: list[str], message: str) -> None:
    lake, releases = paths
    result = run(*args, "--lake", lake, "--releases", releases)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not Path(releases, "fleet-activity").exists() or not any(
        p for p in Path(releases, "fleet-activity").iterdir() if not p.name.startswith(".")
    )


def test_exhausted_k_in_all_mode_lists_each_dataset(
    paths: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, releases = paths
    monkeypatch.setenv("CORRIDORHUB_PUBLISH_K", "500")
    result = run("--all", "--from", "2025-03-14", "--lake", lake, "--releases", releases)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 5 and all("Nothing to publish" in line for line in lines)


def test_a_missing_lake_is_one_error_that_says_how_a_lake_is_made_and_leaves_nothing(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    result = run(
        "--all", "--from", "2025-03-14", "--lake", str(tmp_path / "nowhere"), "--releases", str(releases)
    )
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.startswith("Error: ")] == [
        f"Error: No lake at {tmp_path / 'nowhere'}: `corridorhub ingest` creates the lake when it starts "
        "(so does `corridorhub demo`); or point --lake at an existing lake"
    ]
    assert not releases.exists() or not any(releases.rglob("*")), sorted(releases.rglob("*"))


def test_all_under_differential_privacy_leaves_trips_od_out_and_says_why(
    paths: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, releases = paths
    monkeypatch.setenv("CORRIDORHUB_DP_EPSILON", "1")
    result = run("--all", "--from", "2025-03-14", "--lake", lake, "--releases", releases)
    assert "trips-od: left out under differential privacy: trips-od has no differential-privacy plan" in (
        result.output
    )
    assert not (Path(releases) / "trips-od").exists()
    refused = run("--dataset", "trips-od", "--from", "2025-03-14", "--lake", lake, "--releases", releases)
    assert refused.exit_code == 1
    assert "Error: trips-od is left out of releases under differential privacy" in refused.output
