"""Ingest test harness: a real Ingestor (in a thread or as a `corridorhub ingest` process) and lake checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from corridorhub.simulator import SampleKey, SimMessage
from ingest import Ingestor
from store.lake import Lake
from store.schema import STREAMS
from store.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def ingest_settings(broker_url: str, lake: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "broker": broker_url,
        "lake": lake,
        "client_id": f"test-ingest-{os.getpid()}-{time.monotonic_ns()}",
        "flush_interval_s": 0.2,
        "status_interval_s": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running_ingestor(settings: Settings) -> Iterator[Ingestor]:
    """An Ingestor on a thread of this process; stopped (flush, ack, disconnect) on exit."""
    ingestor = Ingestor(settings)
    stop = threading.Event()
    errors: list[BaseException] = []

    def _run() -> None:
        try:
            ingestor.run(stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=_run, name="ingest", daemon=True)
    thread.start()
    assert ingestor.ready.wait(30), "ingest did not connect"
    try:
        yield ingestor
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "ingest did not stop within 60 s"
    if errors:
        raise errors[0]


def start_ingest_process(broker_url: str, lake: Path, client_id: str, log: Path) -> subprocess.Popen[bytes]:
    """`corridorhub ingest` as its own process, as an operator runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "corridorhub",
        "ingest",
        "--broker",
        broker_url,
        "--lake",
        str(lake),
        "--client-id",
        client_id,
        "--flush-interval",
        "0.2",
        "--status-interval",
        "1",
    ]
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout)


def lake_keys(lake: Path) -> Counter[SampleKey]:
    """(operator, device_id, stream, seq, ts in ms) of every row in the lake's snapshots, with counts."""
    con = Lake(lake).connect()
    keys: Counter[SampleKey] = Counter()
    for stream in STREAMS:
        rows = con.execute(f"SELECT operator, device_id, seq, epoch_ms(ts) FROM {stream}").fetchall()
        for operator, device, seq, ts in rows:
            keys[(operator, device, stream, seq, ts)] += 1
    con.close()
    return keys


def quarantine_reasons(lake: Path) -> list[tuple[str, int | None, str]]:
    con = Lake(lake).connect()
    rows = con.execute("SELECT topic, sample_index, reason FROM quarantine").fetchall()
    con.close()
    return rows


def expected_quarantine(messages: list[SimMessage]) -> Counter[tuple[str, int | None, str]]:
    """Quarantine records the lake must hold at least once per distinct message."""
    out: Counter[tuple[str, int | None, str]] = Counter()
    seen: set[tuple[str, bytes]] = set()
    for m in messages:
        if (m.topic, m.payload) in seen:
            continue
        seen.add((m.topic, m.payload))
        for index, reason in m.expected_quarantine:
            out[(m.topic, index, reason)] += 1
    return out


def all_files_readable(lake: Path) -> int:
    """Read every Parquet file under the lake (committed or not); returns how many."""
    files = [p for p in lake.rglob("*.parquet")]
    for path in files:
        pq.read_table(path)
    return len(files)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
