"""Freshness: how long after a sample is published an analyst's query can see it.

A publisher sends the simulated fleet in real time at a steady, moderate rate and notes the moment each
sample left (``time.monotonic`` right after paho took the message: a little early, so freshness comes
out a little long rather than short).  Meanwhile a poller does what an analyst does: a new DuckDB
connection over the lake's current committed snapshot (``Lake.connect``), then
``max(seq)`` per device and stream.  Ingest commits whole flushes in receipt order and MQTT keeps the
order of one topic, so a sample is queryable once its device's ``max(seq)`` reaches it.  A sample's
freshness is the end of the first poll that saw it minus the moment it was sent: it is exact to within
one poll period (the query's own time plus the pause between polls), reported as ``resolution_s``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from corridorhub.bench._measure import percentile
from corridorhub.simulator import SimConfig, SimMessage, generate
from corridorhub.simulator.publish import publish
from store.lake import Lake
from store.schema import STREAMS
from store.settings import BrokerAddress

DEVICES = 100
NETWORK_EVERY = 5
SETTLE_TIMEOUT_S = 15.0

_DeviceStream = tuple[str, str, str]  # (operator, device_id, stream)
_MAX_SEQ_SQL = " UNION ALL ".join(
    f"SELECT operator, device_id, '{s}' AS stream, max(seq) AS seq FROM {s} GROUP BY operator, device_id"
    for s in STREAMS
)


@dataclass(frozen=True)
class Freshness:
    samples: int  # published
    seen: int  # found in the lake
    p50_s: float
    p99_s: float
    max_s: float
    polls: int
    resolution_s: float  # mean time from one poll's answer to the next
    samples_per_s: float  # publishing rate actually achieved


class _Poller:
    """Polls the lake's committed snapshot; keeps (answered_at, max seq per device and stream)."""

    def __init__(self, lake: Lake, interval_s: float) -> None:
        self.lake = lake
        self.interval_s = interval_s
        self.answers: list[tuple[float, dict[_DeviceStream, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-freshness-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def latest(self) -> dict[_DeviceStream, int]:
        return self.answers[-1][1] if self.answers else {}

    def _run(self) -> None:
        while not self._stop.is_set():
            con = self.lake.connect()
            try:
                rows = con.execute(_MAX_SEQ_SQL).fetchall()
            finally:
                con.close()
            answered_at = time.monotonic()
            self.answers.append(
                (answered_at, {(o, d, s): int(seq) for o, d, s, seq in rows if seq is not None})
            )
            self._stop.wait(self.interval_s)


def measure_freshness(
    broker: BrokerAddress,
    lake: Lake,
    *,
    seconds: float,
    samples_per_s: float,
    poll_interval_s: float,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Freshness:
    """Publish ``samples_per_s`` for ``seconds`` in real time and time each sample until it is queryable.

    Ingest must already be running and subscribed on ``broker``, writing to ``lake``.
    """
    rate_hz = samples_per_s / (DEVICES * (1 + 1 / NETWORK_EVERY))
    config = SimConfig(
        devices=DEVICES,
        rate_hz=rate_hz,
        duration_s=seconds,
        seed=seed,
        start=datetime.now(UTC),
        network_every=NETWORK_EVERY,
    )
    messages = list(generate(config))
    sent: dict[_DeviceStream, list[tuple[int, float]]] = defaultdict(list)
    count = 0

    def on_sent(message: SimMessage) -> None:
        nonlocal count
        now = time.monotonic()
        for operator, device, stream, seq, _ts in message.valid_keys:
            sent[(operator, device, stream)].append((seq, now))
            count += 1
        if progress is not None:
            progress(count)

    poller = _Poller(lake, poll_interval_s)
    poller.start()
    try:
        report = publish(
            messages, broker, realtime=True, client_id="corridorhub-bench-fresh", progress=on_sent
        )
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline and not _all_seen(sent, poller.latest()):
            time.sleep(poll_interval_s)
    finally:
        poller.stop()
    return _summarise(sent, poller.answers, count / report.elapsed_s if report.elapsed_s else 0.0)


def _all_seen(sent: dict[_DeviceStream, list[tuple[int, float]]], latest: dict[_DeviceStream, int]) -> bool:
    return all(latest.get(key, -1) >= samples[-1][0] for key, samples in sent.items())


def _summarise(
    sent: dict[_DeviceStream, list[tuple[int, float]]],
    answers: list[tuple[float, dict[_DeviceStream, int]]],
    rate: float,
) -> Freshness:
    latencies: list[float] = []
    total = 0
    for key, samples in sent.items():
        total += len(samples)
        ordered = sorted(samples)
        i = 0
        for answered_at, maxima in answers:
            high = maxima.get(key, -1)
            while i < len(ordered) and ordered[i][0] <= high:
                latencies.append(answered_at - ordered[i][1])
                i += 1
    periods = [b[0] - a[0] for a, b in zip(answers, answers[1:], strict=False)]
    if not latencies:
        return Freshness(total, 0, float("nan"), float("nan"), float("nan"), len(answers), 0.0, rate)
    return Freshness(
        samples=total,
        seen=len(latencies),
        p50_s=percentile(latencies, 50),
        p99_s=percentile(latencies, 99),
        max_s=max(latencies),
        polls=len(answers),
        resolution_s=sum(periods) / len(periods) if periods else 0.0,
        samples_per_s=rate,
    )
