"""Send simulated messages to an MQTT broker with paho-mqtt 2.x, and wait until the broker has them.

QoS 1 by default: ``publish`` returns only once every message is acknowledged (PUBACK), so a report
of N messages means the broker took N.  In-flight messages are bounded (``max_inflight``); beyond
that, sending waits for acknowledgements instead of queueing without limit inside paho.  A small window
is also the fast one: paho's bookkeeping grows with it (measured against a local mosquitto, QoS 1:
about 18,000 msg/s at 100 in flight, 12,000 at 1,000, 2,000 at 10,000).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from corridorhub.simulator.generate import SimMessage
from store.errors import BrokerError
from store.settings import BrokerAddress

log = logging.getLogger(__name__)


@dataclass
class PublishReport:
    messages: int = 0  # sent and acknowledged
    payload_bytes: int = 0
    rejected: int = 0  # acknowledged with a failure reason code (MQTT 5), e.g. packet too large
    skipped_too_large: int = 0  # above the broker's Maximum Packet Size: not sent at all
    elapsed_s: float = 0.0

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Acks:
    """Counts messages in flight; the paho network thread calls ``done``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.rejected = 0
        self._cond = threading.Condition()

    def start(self) -> None:
        with self._cond:
            self.in_flight += 1

    def done(self, failed: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            self.rejected += failed
            self._cond.notify_all()

    def wait_below(self, limit: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.in_flight < limit, timeout=timeout)


class _Connection:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason: ReasonCode | None = None
        self.max_packet_size: int | None = None


def _client(
    broker: BrokerAddress, client_id: str, protocol: str, ca_file: Path | None, max_inflight: int
) -> mqtt.Client:
    version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(ca_certs=str(ca_file) if ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
    client.max_inflight_messages_set(max_inflight)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


def publish(
    messages: Iterable[SimMessage],
    broker: BrokerAddress,
    *,
    qos: int = 1,
    realtime: bool = True,
    client_id: str = "corridorhub-simulate",
    protocol: str = "5",
    ca_file: Path | None = None,
    max_inflight: int = 100,
    connect_timeout_s: float = 10.0,
    ack_timeout_s: float = 60.0,
    progress: Callable[[SimMessage], None] | None = None,
) -> PublishReport:
    """Send ``messages`` in order and wait for every acknowledgement.

    ``realtime`` sleeps to honour each message's ``send_at`` (seconds after the first send);
    otherwise messages go out as fast as the broker takes them.  Raises ``BrokerError`` when the
    broker cannot be reached, refuses us, or stops acknowledging for ``ack_timeout_s``.
    """
    if qos not in (0, 1, 2):
        raise BrokerError(f"QoS must be 0, 1 or 2, got {qos}")
    acks = _Acks(max_inflight)
    connection = _Connection()
    client = _client(broker, client_id, protocol, ca_file, max_inflight)

    def on_connect(
        _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        connection.reason = reason
        size = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
        connection.max_packet_size = int(size) if size else None
        connection.event.set()

    def on_publish(
        _client: mqtt.Client, _userdata: Any, _mid: int, reason: ReasonCode, _props: Properties | None
    ) -> None:
        acks.done(bool(reason.is_failure))

    client.on_connect = on_connect
    client.on_publish = on_publish
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(f"Cannot reach the MQTT broker at {broker}: {exc}") from None
    client.loop_start()
    try:
        if not connection.event.wait(connect_timeout_s):
            raise BrokerError(f"The MQTT broker at {broker} did not answer within {connect_timeout_s:g} s")
        if connection.reason is not None and connection.reason.is_failure:
            raise BrokerError(f"The MQTT broker at {broker} refused the connection: {connection.reason}")
        return _send_all(client, messages, acks, connection, qos, realtime, ack_timeout_s, progress)
    finally:
        client.disconnect()
        client.loop_stop()


def _send_all(
    client: mqtt.Client,
    messages: Iterable[SimMessage],
    acks: _Acks,
    connection: _Connection,
    qos: int,
    realtime: bool,
    ack_timeout_s: float,
    progress: Callable[[SimMessage], None] | None,
) -> PublishReport:
    report = PublishReport()
    limit = connection.max_packet_size
    started = time.monotonic()
    for message in messages:
        if realtime:
            delay = started + message.send_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        # Fixed header, topic length and properties take well under 64 KiB more than topic + payload.
        if limit is not None and len(message.payload) + len(message.topic) + 16 > limit:
            report.skipped_too_large += 1
            log.warning("skipped a %d-byte message: the broker's limit is %d", len(message.payload), limit)
            continue
        if not acks.wait_below(acks.limit, ack_timeout_s):
            raise BrokerError(f"The MQTT broker acknowledged nothing for {ack_timeout_s:g} s")
        acks.start()
        info = client.publish(message.topic, message.payload, qos=qos)
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos == 0:
            acks.done(True)  # QoS 0 while reconnecting: dropped, and paho will not call on_publish
        elif info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            acks.done(True)  # never queued: paho will not call on_publish for it
            raise BrokerError(f"Publishing failed: {mqtt.error_string(info.rc)}")
        report.messages += 1
        report.payload_bytes += len(message.payload)
        if progress is not None:
            progress(message)
    if not acks.wait_below(1, ack_timeout_s):
        raise BrokerError(
            f"{acks.in_flight} message(s) still unacknowledged after {ack_timeout_s:g} s;"
            " the broker may be down"
        )
    report.rejected = acks.rejected
    report.elapsed_s = time.monotonic() - started
    return report
