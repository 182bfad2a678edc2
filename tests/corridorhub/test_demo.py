"""`corridorhub demo` as a newcomer runs it: one command, a summary of what landed, a clean stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from store.lake import Lake

ROOT = Path(__file__).resolve().parents[2]


def _demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "corridorhub", "demo", "--duration", "6", "--summary-every", "2", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_demo_runs_the_capture_path_and_summarises_the_lake(tmp_path: Path, kind: str) -> None:
    done = _demo(tmp_path, "--embedded-broker", kind, "--devices", "4")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert f"broker {kind}" in out
    assert "after 2 s:" in out and "the lake now holds:" in out
    if kind == "amqtt":
        assert "DEMO ONLY" in done.stderr
    con = Lake(tmp_path / "data" / "lake").connect()
    (rows,) = con.execute("SELECT count(*) FROM state").fetchone()
    devices = con.execute("SELECT count(DISTINCT (operator, device_id)) FROM state").fetchone()[0]
    assert rows > 0 and devices == 4
    assert f"state {rows:,} rows" in out.split("the lake now holds:")[1]


def test_demo_refuses_a_bad_broker_url_in_one_line(tmp_path: Path) -> None:
    done = _demo(tmp_path, "--broker", "http://example")
    assert done.returncode != 0
    assert done.stderr.strip().startswith("Error:") and "broker" in done.stderr
    assert "Traceback" not in done.stderr
