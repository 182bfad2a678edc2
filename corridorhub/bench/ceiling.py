"""The ceiling: how fast one paho MQTT 5 client in Python can take QoS 1 messages off the broker at all.

The client acknowledges each message as it arrives (paho's automatic PUBACK) and throws it away: no
buffer, no decoding, no commit.  Whatever ingest achieves is measured against this.  It resumes the
persistent session that ``preload`` filled, and the clock runs from the first message to the last.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from corridorhub.bench._measure import Drain
from corridorhub.bench.preload import session_properties
from store.errors import BrokerError
from store.settings import BrokerAddress


class _Counter:
    """Touched only by paho's network thread while draining; read by the caller for progress."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.done = threading.Event()
        self.refused: str | None = None

    def on_message(self, _c: mqtt.Client, _u: object, _message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        self.received += 1
        if self.received >= self.expected:
            self.last_at = now
            self.done.set()

    def on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            self.done.set()


def drain_ceiling(
    broker: BrokerAddress,
    client_id: str,
    messages: int,
    rows: int,
    *,
    progress: Callable[[int], None] | None = None,
    timeout_s: float = 600.0,
) -> Drain:
    """Resume ``client_id``'s session and time taking its ``messages`` queued messages (auto-ack)."""
    counter = _Counter(messages)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_message = counter.on_message
    client.on_connect = counter.on_connect
    client.connect(broker.host, broker.port, clean_start=False, properties=session_properties())
    client.loop_start()
    deadline = time.monotonic() + timeout_s
    try:
        while not counter.done.wait(0.25):
            if progress is not None:
                progress(counter.received)
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the ceiling client took {counter.received:,} of {messages:,} messages"
                    f" in {timeout_s:g} s"
                )
        if counter.refused is not None:
            raise BrokerError(f"the broker refused the ceiling client: {counter.refused}")
        if progress is not None:
            progress(counter.received)
    finally:
        client.disconnect()
        client.loop_stop()
    assert counter.first_at is not None and counter.last_at is not None
    return Drain(messages, rows, counter.last_at - counter.first_at)
