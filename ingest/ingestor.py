"""The ingest worker: receive, decode, deduplicate, commit durably, and only then acknowledge.

Two threads: paho's network thread puts each message into a bounded buffer; the commit thread (the
caller of :meth:`Ingestor.run`) takes everything that has gathered every ``flush_interval_s`` (or
sooner, by count or bytes), decodes it as one batch, drops duplicates, appends one Delta commit per
stream plus one for quarantine, and then sends the PUBACKs in order of receipt.  A commit that fails
is retried with backoff and nothing is acknowledged meanwhile; the buffer fills and the network
thread stops reading, so memory stays bounded and the broker keeps what we have not taken.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from ingest.buffer import Delivery, MessageBuffer
from ingest.decode import DecodedBatch, Decoder, RawMessage
from ingest.dedup import Deduplicator
from ingest.session import BrokerSession
from ingest.status import IngestCounters, log_line
from store.errors import CorridorHubError
from store.ingest_status import write_status
from store.lake import Lake
from store.repair import unreadable_lake
from store.schema import QUARANTINE, STREAMS
from store.settings import Settings

log = logging.getLogger("corridorhub.ingest")

SEED_WINDOW = timedelta(minutes=15)
MAX_BACKOFF_S = 30.0
SHUTDOWN_GRACE_S = 30.0


@dataclass
class _Prepared:
    """A decoded, deduplicated flush: the tables still to commit, in order."""

    deliveries: list[Delivery]
    pending: list[tuple[str, pa.Table]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0


class Ingestor:
    """One ingest worker.  ``run(stop)`` blocks until ``stop`` is set, then flushes and disconnects."""

    def __init__(self, settings: Settings, lake: Lake | None = None) -> None:
        self.settings = settings
        self.lake = lake or Lake(settings.lake)
        self.counters = IngestCounters(client_id=settings.client_id)
        self.buffer = MessageBuffer(settings.buffer_bytes, settings.flush_messages, settings.flush_bytes)
        self.decoder = Decoder(max_payload_bytes=settings.max_payload_bytes)
        self.dedup = Deduplicator()
        self.session = BrokerSession(settings, self._receive, self.counters)
        self._status_path_root = Path(settings.lake)
        self.ready = threading.Event()

    # -- network thread ----------------------------------------------------------------------------

    def _receive(self, delivery: Delivery) -> None:
        with self.counters.lock:
            self.counters.messages_received += 1
            self.counters.bytes_received += len(delivery.raw.payload)
        self.buffer.put(delivery)

    # -- commit thread -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        # Decoding allocates many short-lived objects; a higher threshold keeps the cyclic
        # collector from scanning the whole heap several times per flush.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        self.lake.ensure_tables()
        self._seed_dedup()
        self.session.start()
        self.ready.set()
        next_status = time.monotonic() + self.settings.status_interval_s
        stopping = False
        try:
            while True:
                taken = self.buffer.take(interval_s=self.settings.flush_interval_s, stop=stop)
                if taken:
                    self._commit_and_ack(taken, stop)
                if stop.is_set():
                    if not stopping:
                        stopping = True
                        log.info("stopping: committing and acknowledging what has arrived")
                    if not taken:
                        break
                elif time.monotonic() >= next_status:  # stopping: the final report below says it once
                    self._report()
                    next_status = time.monotonic() + self.settings.status_interval_s
        finally:
            self.buffer.close()
            self.session.stop()
            with self.counters.lock:
                self.counters.stopped = True
            self._report()
            log.info("ingest stopped cleanly")

    def _seed_dedup(self) -> None:
        """Remember the keys of the last minutes of commits: after a crash between commit and
        acknowledgement the broker redelivers exactly those."""
        since = datetime.now(UTC) - SEED_WINDOW
        seeded = 0
        for stream in STREAMS:
            try:
                recent = self.lake.recent_rows(
                    stream, ["operator", "device_id", "seq", "ts", "received_at"], since
                )
            except (CorridorHubError, duckdb.Error, OSError) as exc:
                log.warning(
                    "cannot read the recent commits of %s to seed dedup (%s): redeliveries of the last "
                    "minutes may be written twice, and `corridorhub compact` removes them; %s",
                    stream,
                    str(unreadable_lake(exc, self.lake)),
                    "ingest goes on",
                )
                continue
            if recent.num_rows:
                # In order of receipt per device (a stable sort keeps a message's samples in order), so
                # that counter restarts are recognised as they were live.
                recent = recent.sort_by(
                    [("operator", "ascending"), ("device_id", "ascending"), ("received_at", "ascending")]
                )
                self.dedup.keep_mask(stream, recent, remember_only=True)
                seeded += recent.num_rows
        if seeded:
            log.info("dedup seeded with %d samples committed in the last %s", seeded, SEED_WINDOW)

    def prepare(self, deliveries: list[Delivery]) -> _Prepared:
        """Decode and deduplicate; the result is committed as is, however often it is retried."""
        batch = self._decode([d.raw for d in deliveries])
        prepared = _Prepared(deliveries)
        for stream in STREAMS:
            table = batch.rows.get(stream)
            if table is None or table.num_rows == 0:
                continue
            before = table.num_rows
            table = self.dedup.drop_duplicates(stream, table)
            prepared.duplicates += before - table.num_rows
            if table.num_rows:
                prepared.pending.append((stream, table))
                prepared.rows[stream] = table.num_rows
        if batch.quarantine.num_rows:
            prepared.pending.append((QUARANTINE, batch.quarantine))
            reasons = batch.quarantine.column("reason").value_counts().to_pylist()
            prepared.quarantined = {r["values"]: r["counts"] for r in reasons}
        return prepared

    def _decode(self, raws: list[RawMessage]) -> DecodedBatch:
        try:
            return self.decoder.decode(raws)
        except Exception:  # noqa: BLE001 - a decoder bug must not stall ingest: isolate the message
            log.exception("decoder failed on a batch of %d messages; decoding one by one", len(raws))
        parts = [self.decoder.decode_or_quarantine(raw) for raw in raws]
        rows = {
            s: pa.concat_tables([p.rows[s] for p in parts if s in p.rows])
            for s in STREAMS
            if any(s in p.rows for p in parts)
        }
        return DecodedBatch(rows, pa.concat_tables([p.quarantine for p in parts]))

    def _commit_and_ack(self, deliveries: list[Delivery], stop: threading.Event) -> None:
        started = time.monotonic()
        prepared = self.prepare(deliveries)
        committed = self._commit(prepared, stop)
        if committed:
            acked = self.session.ack(deliveries)
            with self.counters.lock:
                self.counters.messages_acked += acked
                for stream, n in prepared.rows.items():
                    self.counters.rows[stream] += n
                for reason, n in prepared.quarantined.items():
                    self.counters.quarantined[reason] += n
                self.counters.duplicates_dropped += prepared.duplicates
                self.counters.observe_commit(time.monotonic() - started)
        self.buffer.release(deliveries)
        with self.counters.lock:
            self.counters.buffer_messages = self.buffer.messages
            self.counters.buffer_bytes = self.buffer.bytes

    def _commit(self, prepared: _Prepared, stop: threading.Event) -> bool:
        """Append every pending table; retry with backoff.  False only when giving up at shutdown."""
        backoff = 0.5
        stopping_since: float | None = None
        while prepared.pending:
            name, table = prepared.pending[0]
            try:
                self.lake.append(name, table)
            except (CorridorHubError, OSError) as exc:
                self._commit_failed(name, exc, backoff)
            except Exception as exc:  # noqa: BLE001 - unknown failures are retried like known ones
                log.exception("unexpected error committing to %s", name)
                self._commit_failed(name, exc, backoff)
            else:
                prepared.pending.pop(0)
                continue
            if stop.is_set():
                stopping_since = stopping_since or time.monotonic()
                if time.monotonic() - stopping_since > SHUTDOWN_GRACE_S:
                    log.error(
                        "giving up on commit at shutdown; %d messages stay unacknowledged at the broker",
                        len(prepared.deliveries),
                    )
                    return False
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        return True

    def _commit_failed(self, name: str, exc: BaseException, backoff: float) -> None:
        with self.counters.lock:
            self.counters.commit_failures += 1
        log.error("commit to %s failed (%s); nothing acknowledged, retrying in %.1fs", name, exc, backoff)

    def _report(self) -> None:
        snapshot = self.counters.snapshot(self.dedup)
        log.info("%s", log_line(snapshot))
        try:
            write_status(self._status_path_root, snapshot)
        except OSError as exc:
            log.warning("could not write the status file: %s", exc)
