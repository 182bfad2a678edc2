"""Ingest workers' rates, from what their status files say over time.

A status file holds cumulative counters.  The service remembers, per worker, the last two different files
it has seen (by ``written_at``); the rate is the counters' difference over that interval (``basis``
``"recent"``).  Before a second file was seen, or after the worker restarted (counters went down), the rate
is the average since the worker started (``basis`` ``"since_start"``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class _Reading:
    written_at: float
    started_at: float
    messages: float
    rows: float


@dataclass(frozen=True)
class Rates:
    messages_per_s: float
    rows_per_s: float
    basis: str  # "recent" or "since_start"
    window_s: float


class IngestRates:
    def __init__(self) -> None:
        self._readings: dict[str, tuple[_Reading | None, _Reading]] = {}
        self._lock = threading.Lock()

    def observe(self, status: dict[str, Any]) -> Rates:
        """Remember this status file and return the worker's rates."""
        reading = _Reading(
            written_at=_num(status.get("written_at")),
            started_at=_num(status.get("started_at")),
            messages=_num(status.get("messages_received")),
            rows=sum(_num(v) for v in (status.get("rows") or {}).values()),
        )
        worker = str(status.get("client_id"))
        with self._lock:
            previous, last = self._readings.get(worker, (None, reading))
            if reading.written_at > last.written_at:
                previous, last = last, reading
            elif reading.written_at < last.written_at:  # an older file: the worker was replaced
                previous, last = None, reading
            self._readings[worker] = (previous, last)
        if (
            previous is not None
            and previous.started_at == last.started_at
            and last.messages >= previous.messages
            and last.written_at > previous.written_at
        ):
            window = last.written_at - previous.written_at
            return Rates(
                (last.messages - previous.messages) / window,
                (last.rows - previous.rows) / window,
                "recent",
                window,
            )
        window = max(last.written_at - last.started_at, 1e-9)
        return Rates(last.messages / window, last.rows / window, "since_start", window)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
