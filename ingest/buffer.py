"""The bounded hand-over between the MQTT network thread and the commit thread.

``put`` is called from ``on_message`` and does almost nothing: it appends.  When the bytes waiting
(buffered plus being committed) reach the limit, ``put`` blocks: the network thread stops reading,
the broker stops sending once our Receive Maximum of unacknowledged messages is reached, and memory
stays bounded while a failing commit is retried.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from ingest.decode import RawMessage


@dataclass(frozen=True, slots=True)
class Delivery:
    """A received message and what is needed to acknowledge it once committed."""

    raw: RawMessage
    mid: int
    qos: int
    generation: int  # connection it arrived on: a mid is only valid on its own connection


class MessageBuffer:
    """``max_bytes`` bounds what waits; a flush takes at most ``flush_messages`` / ``flush_bytes``."""

    def __init__(self, max_bytes: int, flush_messages: int, flush_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.flush_messages = flush_messages
        self.flush_bytes = flush_bytes
        self._queue: deque[Delivery] = deque()
        self._queued_bytes = 0
        self._held_bytes = 0  # taken by the commit thread, not yet released
        self._first_at: float | None = None
        self._cond = threading.Condition()
        self._closed = False

    @property
    def messages(self) -> int:
        return len(self._queue)

    @property
    def bytes(self) -> int:
        return self._queued_bytes + self._held_bytes

    def put(self, delivery: Delivery) -> None:
        size = len(delivery.raw.payload)
        with self._cond:
            while (
                not self._closed
                and self._queue_or_held()
                and self._queued_bytes + self._held_bytes + size > self.max_bytes
            ):
                self._cond.wait(0.5)
            first = not self._queue
            if first:
                self._first_at = time.monotonic()
            self._queue.append(delivery)
            self._queued_bytes += size
            # Wake the commit thread only when it has something new to decide: waking it on every
            # message costs the network thread the GIL thousands of times a second.
            if first or len(self._queue) == self.flush_messages or self._queued_bytes >= self.flush_bytes:
                self._cond.notify_all()

    def _queue_or_held(self) -> bool:
        return bool(self._queue) or self._held_bytes > 0

    def take(self, *, interval_s: float, stop: threading.Event) -> list[Delivery]:
        """Wait until the oldest message is ``interval_s`` old, a flush's worth has gathered, or stop;
        then take at most a flush's worth (the rest waits for the next flush, so a backlog is
        decoded in bounded pieces).  Nothing (``[]``) when stopped with an empty buffer, or when nothing
        arrived for ``interval_s``: an idle caller still gets its turn (periodic status reports)."""
        idle_until = time.monotonic() + interval_s
        with self._cond:
            while True:
                if self._queue:
                    assert self._first_at is not None
                    age = time.monotonic() - self._first_at
                    if (
                        age >= interval_s
                        or len(self._queue) >= self.flush_messages
                        or self._queued_bytes >= self.flush_bytes
                        or stop.is_set()
                    ):
                        break
                    self._cond.wait(interval_s - age)
                elif stop.is_set():
                    return []
                else:
                    idle_left = idle_until - time.monotonic()
                    if idle_left <= 0:
                        return []
                    self._cond.wait(min(idle_left, 0.2))
            taken: list[Delivery] = []
            size = 0
            while self._queue and len(taken) < self.flush_messages and (not taken or size < self.flush_bytes):
                delivery = self._queue.popleft()
                taken.append(delivery)
                size += len(delivery.raw.payload)
            self._queued_bytes -= size
            self._held_bytes += size
            # What is left is as old as the flush it missed: due at once.
            self._first_at = time.monotonic() - interval_s if self._queue else None
            return taken

    def release(self, deliveries: list[Delivery]) -> None:
        """The commit holding these is done (or abandoned): make room for more."""
        size = sum(len(d.raw.payload) for d in deliveries)
        with self._cond:
            self._held_bytes -= size
            self._cond.notify_all()

    def close(self) -> None:
        """Unblock every waiting ``put`` (at shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
