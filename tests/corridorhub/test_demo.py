"""`corridorhub demo` as a newcomer runs it: one command, a summary of what landed, a first open-data
release on the catalog page, a clean stop."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from corridorhub.cli import cli
from corridorhub.simulator import DEFAULT_FAULTS, SampleKey, SimConfig, generate
from publish.source import read_source_versions
from store.lake import Lake

ROOT = Path(__file__).resolve().parents[2]


def _demo_args(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "corridorhub", "demo", *args, "--port", "0"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=180)


def _demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _demo_args(cwd, "--duration", "6", "--summary-every", "2", *args)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
    final = out.split("the lake now holds:")[1]
    assert f"4 devices · state {rows:,} rows" in final
    assert "autonomous mode in" in final and "% of state samples (stops included)" in final
    # The quarantine line: its total, the most frequent few reasons by name, and how many more there are.
    reasons = con.execute(
        "SELECT reason, count(*) AS n FROM quarantine GROUP BY 1 ORDER BY n DESC, 1"
    ).fetchall()
    line = next(ln.strip() for ln in final.splitlines() if ln.strip().startswith("quarantine"))
    total, shown = line.removeprefix("quarantine ").removesuffix(")").split(" (")
    assert total == f"{sum(n for _, n in reasons):,}" and len(reasons) > 3
    assert shown.split(", ") == [*(f"{r} {n:,}" for r, n in reasons[:3]), f"{len(reasons) - 3} more reasons"]


def test_demo_refuses_a_bad_broker_url_in_one_line(tmp_path: Path) -> None:
    done = _demo(tmp_path, "--broker", "http://example")
    assert done.returncode != 0
    assert done.stderr.strip().startswith("Error:") and "broker" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_publishes_a_first_release_and_serves_it_on_the_catalog_page(tmp_path: Path) -> None:
    """While the demo runs: after --publish-after seconds a release of today's data is on the page."""
    port = _free_port()
    cmd = [sys.executable, "-m", "corridorhub", "demo", "--duration", "20", "--summary-every", "5"]
    cmd += ["--devices", "4", "--publish-after", "4", "--port", str(port)]
    process = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True).start()  # type: ignore[arg-type]
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("reload the catalog page"):
                break
        out = "".join(lines)
        assert f"open http://127.0.0.1:{port}/ to see the catalog" in out, out + "".join(stderr)[-3000:]
        assert "publishing a first open-data release for" in out, out + "".join(stderr)[-3000:]
        # A fleet of 4 is under k=10 everywhere: the release is made, honestly empty, and says why.
        assert "suppressed (k=10" in out and "fewer than k=10 distinct devices" in out
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        datasets = httpx.get(f"http://127.0.0.1:{port}/v1/datasets", timeout=10).json()["datasets"]
    finally:
        rest, _ = process.communicate(timeout=120)
    assert process.returncode == 0, "".join(stderr)[-3000:]
    releases = tmp_path / "data" / "releases"
    published = sorted(p.name for p in releases.iterdir() if (p / "latest").is_file())
    assert "fleet-activity" in published and "traffic-speed-mesh" in published
    assert {d["id"] for d in datasets} == set(published)
    assert page.status_code == 200 and '<html lang="ja">' in page.text
    for dataset in datasets:
        version = json.loads((releases / dataset["id"] / "latest").read_text())["version"]
        assert (
            dataset["latest_version"] == version
            and (releases / dataset["id"] / version / "manifest.json").is_file()
        )
        assert dataset["title"]["ja"] in page.text
        assert f"/v1/datasets/{dataset['id']}/releases/{version}/manifest.json" in page.text
    assert "stopped after" in rest


def _history_state_rows(devices: int, history_s: float) -> int:
    """State samples the demo's fleet sends for its replayed history (first deliveries): the simulator's."""
    config = SimConfig(devices, 1.0, history_s + 60, 0, datetime.now(UTC), faults=DEFAULT_FAULTS)
    keys: set[SampleKey] = set()
    for message in generate(config):
        if message.send_at >= history_s:
            break
        if not message.duplicate and message.stream == "state":
            keys.update(message.valid_keys)
    return len(keys)


def test_the_first_release_waits_until_the_replayed_history_is_in_the_lake(tmp_path: Path) -> None:
    """With --publish-after 0 the release is due at once, but the history is still on its way: the demo says
    what it waits for, and the release reads a lake that holds every state sample of the history."""
    done = _demo(tmp_path, "--devices", "4", "--history", "2", "--publish-after", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "the first release waits for" in out and "the fleet's last 2 minutes" in out
    assert out.index("the first release waits for") < out.index("publishing a first open-data release")
    releases = tmp_path / "data" / "releases"
    version = json.loads((releases / "fleet-activity" / "latest").read_text())["version"]
    lake = Lake(tmp_path / "data" / "lake")
    versions = read_source_versions(lake, "fleet-activity", version)  # the hub's record of the versions read
    state = DeltaTable(lake.table_uri("state"), version=versions["state"])
    read = ds.dataset(state.file_uris(), format="parquet").count_rows()
    assert read >= _history_state_rows(4, 120.0) > 0


def test_demo_refuses_a_run_longer_than_the_simulator_plays(tmp_path: Path) -> None:
    done = _demo_args(tmp_path, "--duration", str(30 * 86_400 + 1))
    assert done.returncode == 2
    assert "--duration" in done.stderr and "2592000" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_help_says_that_without_broker_it_starts_its_own() -> None:
    result = CliRunner().invoke(cli, ["demo", "--help"], terminal_width=100)
    assert result.exit_code == 0
    broker_help = " ".join(result.output.split("--broker", 1)[1].split("--lake", 1)[0].split())
    assert "the demo starts an embedded broker" in broker_help
    assert "1883" not in broker_help


def test_a_closed_terminal_stops_the_demo_and_its_broker(tmp_path: Path) -> None:
    """SIGHUP (the terminal closed) stops the demo as Ctrl-C does, embedded mosquitto included."""
    cmd = [sys.executable, "-m", "corridorhub", "demo", "--devices", "2", "--history", "0", "--port", "0"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "after " in line:  # the first summary: broker, fleet and ingest are running
                break
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("mosquitto" in c.name() for c in children)
        proc.send_signal(signal.SIGHUP)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest[-2000:]
    assert "SIGHUP: stopping" in rest
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
