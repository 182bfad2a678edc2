"""Ingest counters, logged periodically and written beside the lake for the API to serve.

Each worker writes its snapshot with ``store.ingest_status.write_status``: the API reads those files
and shares no other state with ingest.  Commit latency is kept as a Prometheus
style cumulative histogram so the API can expose it as is.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ingest.dedup import Deduplicator

log = logging.getLogger("corridorhub.ingest")

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class IngestCounters:
    """Everything a worker counts; updated by the commit thread, read by the status writer."""

    client_id: str
    started_at: float = field(default_factory=time.time)
    messages_received: int = 0
    messages_acked: int = 0
    bytes_received: int = 0
    rows: Counter[str] = field(default_factory=Counter)  # committed rows per stream
    quarantined: Counter[str] = field(default_factory=Counter)  # per reason code
    duplicates_dropped: int = 0
    commits: int = 0
    commit_failures: int = 0
    last_commit_at: float | None = None
    last_commit_s: float | None = None
    commit_latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    commit_latency_sum_s: float = 0.0
    buffer_messages: int = 0
    buffer_bytes: int = 0
    connected: bool = False
    subscribed: bool = False
    stopped: bool = False  # the worker has shut down (its last status)
    connects: int = 0
    protocol: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe_commit(self, seconds: float) -> None:
        self.commits += 1
        self.last_commit_at = time.time()
        self.last_commit_s = seconds
        self.commit_latency_sum_s += seconds
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if seconds <= bound:
                self.commit_latency_buckets[i] += 1
                break
        else:
            self.commit_latency_buckets[-1] += 1

    def snapshot(self, dedup: Deduplicator | None = None) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {
                "client_id": self.client_id,
                "pid": os.getpid(),
                "written_at": time.time(),
                "started_at": self.started_at,
                "connected": self.connected,
                "subscribed": self.subscribed,
                "stopped": self.stopped,
                "connects": self.connects,
                "protocol": self.protocol,
                "messages_received": self.messages_received,
                "messages_acked": self.messages_acked,
                "bytes_received": self.bytes_received,
                "rows": dict(self.rows),
                "quarantined": dict(self.quarantined),
                "duplicates_dropped": self.duplicates_dropped,
                "commits": self.commits,
                "commit_failures": self.commit_failures,
                "last_commit_at": self.last_commit_at,
                "last_commit_s": self.last_commit_s,
                "commit_latency": {
                    "buckets_s": list(LATENCY_BUCKETS_S),
                    "counts": list(self.commit_latency_buckets),
                    "sum_s": self.commit_latency_sum_s,
                },
                "buffer_messages": self.buffer_messages,
                "buffer_bytes": self.buffer_bytes,
            }
        if dedup is not None:
            out["devices"] = device_table(dedup)
            out["seq_missing_total"] = sum(d["seq_missing"] for d in out["devices"])
        return out


def device_table(dedup: Deduplicator) -> list[dict[str, Any]]:
    """Per device and stream: last seen, samples accepted, seq values missing (gaps) and counter restarts;
    ``seq_low``/``seq_high`` are those of the counter's current run."""
    rows = []
    for (operator, device_id, stream), track in sorted(dedup.tracks.items()):
        current = track.current
        rows.append(
            {
                "operator": operator,
                "device_id": device_id,
                "stream": stream,
                "last_seen_at": track.last_seen_us / 1e6 if track.last_seen_us else None,
                "samples": track.samples,
                "seq_low": current.low if current else None,
                "seq_high": current.high if current else None,
                "seq_missing": track.missing,
                "seq_restarts": track.restarts,
            }
        )
    return rows


def log_line(snapshot: dict[str, Any]) -> str:
    rows = snapshot["rows"]
    quarantined = sum(snapshot["quarantined"].values())
    return (
        f"msgs={snapshot['messages_received']} acked={snapshot['messages_acked']} "
        f"rows state={rows.get('state', 0)} event={rows.get('event', 0)} network={rows.get('network', 0)} "
        f"quarantined={quarantined} dup={snapshot['duplicates_dropped']} "
        f"missing_seq={snapshot.get('seq_missing_total', 0)} commits={snapshot['commits']} "
        f"last_commit_s={snapshot['last_commit_s'] or 0:.3f} buffer={snapshot['buffer_messages']}msgs/"
        f"{snapshot['buffer_bytes'] // 1024}KiB connected={snapshot['connected']}"
    )
