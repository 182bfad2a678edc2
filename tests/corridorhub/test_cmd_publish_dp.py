"""``corridorhub publish`` with differential privacy on (CORRIDORHUB_DP_EPSILON): a release, then the
budget running out for the next day: one ``Error:`` line and exit 1; the released day repeats for free."""

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
        tmp_path / "lake", Fleet(devices=12, minutes=4), Fleet(devices=12, minutes=4, start=T0 + DAY_S)
    )
    env = {"CORRIDORHUB_DP_EPSILON": "30", "CORRIDORHUB_DP_BUDGET_EPSILON": "50"}
    where = ["--lake", str(tmp_path / "lake"), "--releases", str(tmp_path / "releases")]

    def publish(day: str) -> Result:
        args = ["publish", "--dataset", "network-quality-mesh", "--from", day, "--to", day]
        return CliRunner().invoke(cli, [*args, *where], env=env)

    first = publish("2025-03-14")
    assert first.exit_code == 0, first.output
    assert "differential privacy ε=30" in first.output and "spent 30 of 50" in first.output
    second = publish("2025-03-15")
    assert second.exit_code == 1
    lines = [line for line in second.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: network-quality-mesh: privacy budget exhausted")
    assert "spent 30 of 50" in lines[0]
    again = publish("2025-03-14")  # a day published before is repeated: no new noise, nothing spent
    assert again.exit_code == 0, again.output
    assert "1 day(s) published before, repeated as they were (2025-03-14)" in again.output
    versions = sorted(
        p.name for p in (tmp_path / "releases" / "network-quality-mesh").iterdir() if p.is_dir()
    )
    assert versions == ["2025-03-14_2025-03-14-r1", "2025-03-14_2025-03-14-r2"]
