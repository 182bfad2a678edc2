"""Fill the broker's queues before a consumer is timed, so the publisher never competes with it for CPU.

``open_session`` makes the broker keep a persistent MQTT 5 session (clean start, a session expiry, a
QoS 1 subscription) for a client id and disconnects: from then on the broker queues every matching
message for that id.  ``preload`` opens a session for each consumer and publishes the workload once;
mosquitto copies it into every queue (``deploy/mosquitto.conf`` allows 1,000,000 queued messages per
client).  When a consumer then connects with ``clean_start=False`` under the same id, the broker sends
it the queue as fast as it takes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from corridorhub.simulator import SimMessage
from corridorhub.simulator.publish import PublishReport, publish
from store.errors import BrokerError
from store.settings import BrokerAddress

#: The largest queue ``deploy/mosquitto.conf`` lets the broker hold for one client.
MAX_QUEUED_MESSAGES = 1_000_000
SESSION_EXPIRY_S = 3_600
RECEIVE_MAXIMUM = 65_535


def session_properties(expiry_s: int = SESSION_EXPIRY_S) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry_s
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    return props


def open_session(broker: BrokerAddress, client_id: str, topic: str, timeout_s: float = 10.0) -> None:
    """Create a fresh persistent session subscribed to ``topic`` (QoS 1) for ``client_id``, then leave."""
    subscribed = threading.Event()
    failure: list[str] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: Properties | None) -> None:
        if reason.is_failure:
            failure.append(f"connect refused: {reason}")
            subscribed.set()
        else:
            c.subscribe(topic, qos=1)

    def on_subscribe(
        _c: mqtt.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: Properties | None
    ) -> None:
        failure.extend(f"subscription refused: {code}" for code in codes if code.is_failure)
        subscribed.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.connect(broker.host, broker.port, clean_start=True, properties=session_properties())
    client.loop_start()
    try:
        if not subscribed.wait(timeout_s):
            raise BrokerError(f"no subscription acknowledgement from {broker} within {timeout_s:g} s")
        if failure:
            raise BrokerError(f"cannot open a session for {client_id} at {broker}: {failure[0]}")
    finally:
        client.disconnect()
        client.loop_stop()


def preload(
    broker: BrokerAddress,
    messages: Iterable[SimMessage],
    client_ids: Iterable[str],
    topic: str,
    *,
    progress: Callable[[SimMessage], None] | None = None,
) -> PublishReport:
    """Queue ``messages`` at the broker for each of ``client_ids``; returns once the broker has them all."""
    for client_id in client_ids:
        open_session(broker, client_id, topic)
    return publish(
        messages,
        broker,
        realtime=False,
        client_id="corridorhub-bench-publisher",
        progress=progress,
    )
