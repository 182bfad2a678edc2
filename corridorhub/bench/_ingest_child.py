"""The child side of ``ingest_process``: run the real ``Ingestor`` and report in JSON lines on stdout.

Run as ``python -m corridorhub.bench._ingest_child SPEC`` by ``IngestProcess`` (whose docstring has the
protocol); nothing imports this module, so ``-m`` runs it fresh.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

from corridorhub.bench._measure import peak_rss_mb
from corridorhub.config import load_settings
from ingest import Ingestor

PROGRESS_EVERY_S = 0.25
POLL_S = 0.02


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _figures(ingestor: Ingestor) -> dict[str, int]:
    c = ingestor.counters
    with c.lock:
        return {
            "received": c.messages_received,
            "acked": c.messages_acked,
            "rows": sum(c.rows.values()),
            "commits": c.commits,
        }


def main(spec: dict[str, Any]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Only the flags count: no environment, and the parent runs us where no corridorhub.toml is.
    settings = load_settings(spec["settings"], environ={})
    expect: int | None = spec["expect_messages"]
    ingestor = Ingestor(settings)
    counters = ingestor.counters
    stop = threading.Event()
    asked_to_stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.readline()
        asked_to_stop.set()

    worker = threading.Thread(target=ingestor.run, args=(stop,), name="ingest", daemon=True)
    worker.start()
    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
    while not (counters.subscribed or asked_to_stop.is_set() or not worker.is_alive()):
        time.sleep(POLL_S)
    _emit("ready")

    first_at: float | None = None
    done_at: float | None = None
    next_progress = time.monotonic()
    while worker.is_alive() and not asked_to_stop.is_set():
        now = time.monotonic()
        if first_at is None and counters.messages_received:
            first_at = now
        if expect is not None and counters.messages_acked >= expect:
            done_at = now
            break
        if now >= next_progress:
            _emit("progress", **_figures(ingestor))
            next_progress = now + PROGRESS_EVERY_S
        time.sleep(POLL_S)
    stop.set()
    worker.join()
    drain_s = done_at - first_at if done_at is not None and first_at is not None else None
    _emit("done", drain_s=drain_s, peak_rss_mb=peak_rss_mb(), **_figures(ingestor))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
