"""What an operator reads in `corridorhub ingest`'s log: counters once at shutdown, counters while idle,
and why the broker cannot be reached.  Real mosquitto, real `corridorhub ingest` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import ROOT, lake_keys, stop_process, wait_until

from corridorhub.broker import EmbeddedBroker
from corridorhub.simulator import SimConfig, expected_rows, generate
from corridorhub.simulator.publish import publish
from store.settings import BrokerAddress

START = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)


def _ingest(broker_url: str, lake: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """`corridorhub ingest` as an operator starts it, its stdout and stderr (the log) into ``log``."""
    cmd = [sys.executable, "-m", "corridorhub", "ingest", "--broker", broker_url, "--lake", str(lake)]
    cmd += ["--client-id", f"logs-{os.getpid()}-{time.monotonic_ns()}", "--flush-interval", "0.2", *args]
    # A short session expiry: the shared broker need not queue later tests' messages for us for a day.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CORRIDORHUB_SESSION_EXPIRY_S": "5"}
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _lines(log: Path, text: str) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if text in line]


def test_shutdown_prints_the_final_counters_once(broker: EmbeddedBroker, tmp_path: Path) -> None:
    lake, log = tmp_path / "lake", tmp_path / "ingest.log"
    messages = list(generate(SimConfig(devices=2, rate_hz=2, duration_s=5, seed=71, start=START)))
    final = f"msgs={len(messages)} acked={len(messages)}"
    proc = _ingest(broker.url, lake, log, "--status-interval", "1")
    try:
        assert wait_until(lambda: bool(_lines(log, "subscribed to")), timeout=30), log.read_text()
        publish(messages, BrokerAddress.parse(broker.url), realtime=False, client_id=f"pub-{os.getpid()}")
        expected = expected_rows(messages)
        assert wait_until(lambda: lake.exists() and set(lake_keys(lake)) == expected, timeout=60)
        # the periodic report comes while nothing arrives (it used to wait for the next message)
        assert wait_until(lambda: bool(_lines(log, final)), timeout=60), log.read_text()
    finally:
        assert stop_process(proc, signal.SIGINT) == 0, log.read_text()
    text = log.read_text()
    assert text.count("stopping: ") == 1, text
    after_stop = text[text.index("stopping: ") :].splitlines()
    assert [line for line in after_stop if "msgs=" in line] == [next(ln for ln in after_stop if final in ln)]
    assert after_stop[-1].endswith("ingest stopped cleanly"), text


def test_counters_are_logged_while_no_message_arrives(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The status log (and file) keeps coming while the fleet is quiet, not only when messages flow."""
    lake, log = tmp_path / "lake", tmp_path / "ingest.log"
    proc = _ingest(broker.url, lake, log, "--status-interval", "0.5")
    try:
        assert wait_until(lambda: len(_lines(log, "msgs=0 acked=0")) >= 2, timeout=60), log.read_text()
    finally:
        assert stop_process(proc, signal.SIGINT) == 0, log.read_text()
    assert _lines(log, "msgs=0 acked=0")[-1].endswith("connected=False")  # the final one, after disconnect
