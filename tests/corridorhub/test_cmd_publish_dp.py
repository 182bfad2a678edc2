"""``corridorhub publish`` with differential privacy on (CORRIDORHUB_DP_EPSILON): a release, then the
budget running out: one ``Error:`` line and exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from corridorhub.cli import cli
from tests.publish.telemetry import Fleet, fleet_lake


def test_publish_with_dp_until_the_budget_is_spent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no corridorhub.toml of the developer's
    fleet_lake(tmp_path / "lake", Fleet(devices=12, minutes=4))
    env = {"CORRIDORHUB_DP_EPSILON": "30", "CORRIDORHUB_DP_BUDGET_EPSILON": "50"}
    args = ["publish", "--dataset", "network-quality-mesh", "--from", "2025-03-14", "--to", "2025-03-14"]
    args += ["--lake", str(tmp_path / "lake"), "--releases", str(tmp_path / "releases")]
    first = CliRunner().invoke(cli, args, env=env)
    assert first.exit_code == 0, first.output
    assert "differential privacy ε=30" in first.output and "spent 30 of 50" in first.output
    second = CliRunner().invoke(cli, args, env=env)
    assert second.exit_code == 1
    lines = [line for line in second.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: network-quality-mesh: privacy budget exhausted")
    assert "spent 30 of 50" in lines[0]
    versions = sorted(
        p.name for p in (tmp_path / "releases" / "network-quality-mesh").iterdir() if p.is_dir()
    )
    assert versions == ["2025-03-14_2025-03-14-r1"]
