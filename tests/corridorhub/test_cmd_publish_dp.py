"""``corridorhub publish`` with differential privacy on (CORRIDORHUB_DP_EPSILON): a release, then the
day's budget running out for another dataset: one ``Error:`` line naming the figures and exit 1; the
released day repeats for free."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from corridorhub.cli import cli
from tests.publish.telemetry import T0, Fleet, fleet_lake

DAY_S = timedelta(days=1)


def test_publish_with_dp_until_the_budget_is_spent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no corridorhub.toml of the developer's
    fleet_lake(
        tmp_path / "lake", Fleet(devices=12, minutes=1), Fleet(devices=12, minutes=1, start=T0 + DAY_S)
    )
    # The mesh datasets spend 0.3 of dp_epsilon each per device-day: 9 of a day's budget of 15.
    env = {"CORRIDORHUB_DP_EPSILON": "30", "CORRIDORHUB_DP_BUDGET_EPSILON": "15"}
    where = ["--lake", str(tmp_path / "lake"), "--releases", str(tmp_path / "releases")]

    def publish(day: str, dataset: str = "network-quality-mesh") -> Result:
        args = ["publish", "--dataset", dataset, "--from", day, "--to", day]
        return CliRunner().invoke(cli, [*args, *where], env=env)

    first = publish("2025-03-14")
    assert first.exit_code == 0, first.output
    assert "differential privacy ε=9 δ=3e-07 per device-day, noisy device count at least" in first.output
    assert "the days have spent at most 9 of 15, all datasets" in first.output
    second = publish("2025-03-14", "traffic-speed-mesh")
    assert second.exit_code == 1
    lines = [line for line in second.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("Error: traffic-speed-mesh: privacy budget exhausted for 2025-03-14")
    assert (
        "needs epsilon 9 per device-day, that day has spent 9 of 15 (6 left; network-quality-mesh 9)"
        in lines[0]
    )
    assert publish("2025-03-15", "traffic-speed-mesh").exit_code == 0  # another day has its own budget
    again = publish("2025-03-14")  # a day published before is repeated: no new noise, nothing spent
    assert again.exit_code == 0, again.output
    assert "1 day(s) published before, repeated as they were (2025-03-14)" in again.output
    versions = sorted(
        p.name for p in (tmp_path / "releases" / "network-quality-mesh").iterdir() if p.is_dir()
    )
    assert versions == ["2025-03-14_2025-03-14-r1", "2025-03-14_2025-03-14-r2"]
