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
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
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
            if not self._queue:
                self._first_at = time.monotonic()
            self._queue.append(delivery)
            self._queued_bytes += size
            self._cond.notify_all()

    def _queue_or_held(self) -> bool:
        return bool(self._queue) or self._held_bytes > 0

    def take(
        self, *, interval_s: float, max_messages: int, max_bytes: int, stop: threading.Event
    ) -> list[Delivery]:
        """Wait until the oldest message is ``interval_s`` old, enough has gathered, or stop; take all."""
        with self._cond:
            while True:
                if self._queue:
                    assert self._first_at is not None
                    age = time.monotonic() - self._first_at
                    if (
                        age >= interval_s
                        or len(self._queue) >= max_messages
                        or self._queued_bytes >= max_bytes
                        or stop.is_set()
                    ):
                        break
                    self._cond.wait(interval_s - age)
                elif stop.is_set():
                    return []
                else:
                    self._cond.wait(0.2)
            taken = list(self._queue)
            self._queue.clear()
            self._held_bytes += self._queued_bytes
            self._queued_bytes = 0
            self._first_at = None
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
