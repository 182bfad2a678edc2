"""The ingest under test, in a process of its own: its CPU and peak RSS are then its own.

``IngestProcess`` starts ``python -m corridorhub.bench._ingest_child SPEC``, where SPEC is JSON: the
ingest settings and, for a drain, how many messages to expect.  The child runs the real ``Ingestor``
on a thread and talks back in JSON lines on stdout:

``{"event": "ready"}``                    connected and subscribed
``{"event": "progress", "acked": N, ...}`` four times a second
``{"event": "done", "drain_s": ..., "peak_rss_mb": ..., ...}`` after a clean stop (flush, ack, disconnect)

The child stops once ``messages_acked`` reaches the expected count (a drain: every message committed
and acknowledged), or when the parent writes a line or closes stdin.  ``drain_s`` runs from the first
message received to the moment the last acknowledgement was sent, read from the ingest counters every
``poll_s``; ``peak_rss_mb`` is the child's own high-water mark (``VmHWM``), exact, imports included.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from store.errors import CorridorHubError
from store.settings import Settings


@dataclass(frozen=True)
class IngestRun:
    """What the child reported when it stopped."""

    received: int
    acked: int
    rows: int
    commits: int
    drain_s: float | None  # None when it was stopped before acknowledging the expected count
    peak_rss_mb: float


def settings_to_flags(settings: Settings) -> dict[str, Any]:
    """Every setting as a JSON-able flag for ``corridorhub.config.load_settings``."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


class IngestProcess:
    """Start, watch and stop one ingest child.  Use as a context manager: it never outlives the block."""

    def __init__(self, settings: Settings, workdir: Path, *, expect_messages: int | None = None) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"ingest-{settings.client_id}.log"
        self.spec = {"settings": settings_to_flags(settings), "expect_messages": expect_messages}
        self.progress: dict[str, Any] = {"acked": 0, "received": 0, "rows": 0}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> IngestProcess:
        self._log = self.log_path.open("ab")
        # cwd is the bench's own folder: no corridorhub.toml from the caller's folder leaks in.
        self._process = subprocess.Popen(
            [sys.executable, "-m", "corridorhub.bench._ingest_child", json.dumps(self.spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=self.workdir,
            text=True,
        )
        threading.Thread(target=self._read, name="bench-ingest-reader", daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if self._log is not None:
            self._log.close()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "progress":
                self.progress = event
            else:
                self._events.put(event)
        self._events.put({"event": "exit"})

    def _expect(self, name: str, timeout_s: float) -> dict[str, Any]:
        try:
            event = self._events.get(timeout=timeout_s)
        except queue.Empty:
            raise CorridorHubError(
                f"bench: ingest sent no '{name}' within {timeout_s:g} s (log: {self.log_path})"
            ) from None
        return self._check(name, event)

    def _check(self, name: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("event") != name:
            raise CorridorHubError(f"bench: ingest stopped unexpectedly (log: {self.log_path})")
        return event

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        self._expect("ready", timeout_s)

    def poll_done(self, timeout_s: float) -> IngestRun | None:
        """The child's report once it has acknowledged the expected count and stopped by itself, else None."""
        try:
            event = self._events.get(timeout=timeout_s)
        except queue.Empty:
            return None
        return _run_from(self._check("done", event))

    def stop(self, timeout_s: float = 60.0) -> IngestRun:
        """Ask the child to flush, acknowledge and stop."""
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write("stop\n")
            self._process.stdin.close()
        except OSError:
            pass  # it has stopped already; its 'done' or 'exit' is waiting in the queue
        return _run_from(self._expect("done", timeout_s))


def _run_from(event: dict[str, Any]) -> IngestRun:
    return IngestRun(
        received=int(event["received"]),
        acked=int(event["acked"]),
        rows=int(event["rows"]),
        commits=int(event["commits"]),
        drain_s=event["drain_s"],
        peak_rss_mb=float(event["peak_rss_mb"]),
    )
