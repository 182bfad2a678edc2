"""The embedded broker: mosquitto from the repo's deploy/mosquitto.conf, and the amqtt demo fallback.

These check the broker promises ingest builds on: MQTT v5 at QoS 1, persistent sessions that survive a
broker restart, no silent drop past mosquitto's default 1,000-message queue, payloads above the hub's
1 MiB quarantine limit still delivered.  Clients are plain paho-mqtt 2.x.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from corridorhub.broker import AMQTT_KIND, MOSQUITTO_KIND, REPO_CONFIG, EmbeddedBroker

TIMEOUT = 30.0


class Inbox:
    """Collects the payloads a client receives; wait_for() blocks until enough have arrived."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.qos: set[int] = set()
        self._arrived = threading.Condition()

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._arrived:
            self.payloads.append(bytes(message.payload))
            self.qos.add(message.qos)
            self._arrived.notify_all()

    def wait_for(self, count: int) -> list[bytes]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.payloads) >= count, timeout=TIMEOUT)
            return list(self.payloads)


class Connection:
    """A paho client connected with its network loop running; remembers what CONNACK said."""

    def __init__(
        self,
        broker: EmbeddedBroker,
        client_id: str,
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        clean_start: bool = True,
        session_expiry: int = 0,
    ) -> None:
        self.inbox = Inbox()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.client.on_message = self.inbox.on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.connack: ReasonCode | None = None
        self.session_present = False
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        properties = None
        if protocol == MQTTProtocolVersion.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call,unused-ignore]
            properties.SessionExpiryInterval = session_expiry
            self.client.connect(broker.host, broker.port, clean_start=clean_start, properties=properties)
        else:
            self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._connected.wait(TIMEOUT), "no CONNACK from the broker"

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connack = reason_code
        self.session_present = flags.session_present
        self._connected.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        assert all(code.value == 1 for code in reason_codes), reason_codes  # granted QoS 1
        self._subscribed.set()

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(TIMEOUT), "no SUBACK"

    def publish_all(self, topic: str, payloads: list[bytes]) -> None:
        """Publish at QoS 1 and return once every PUBACK is in."""
        infos = [self.client.publish(topic, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def connect(request: pytest.FixtureRequest) -> Iterator[Callable[..., Connection]]:
    """Open paho connections that are closed after the test."""
    opened: list[Connection] = []

    def _connect(broker: EmbeddedBroker, client_id: str, **options: object) -> Connection:
        connection = Connection(broker, f"{request.node.name}-{client_id}"[-60:], **options)  # type: ignore[arg-type]
        opened.append(connection)
        return connection

    yield _connect
    for connection in opened:
        connection.close()


def numbered(count: int) -> list[bytes]:
    return [f'{{"seq": {i}}}'.encode() for i in range(count)]


def test_mosquitto_runs_the_repo_config(broker: EmbeddedBroker) -> None:
    assert broker.kind == MOSQUITTO_KIND and broker.supports_mqtt5
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    running = (broker.data_dir / "mosquitto.conf").read_text().splitlines()
    rewritten = ("listener", "persistence_location", "log_dest")
    for line in REPO_CONFIG.read_text().splitlines():
        if line.strip() and not line.startswith("#") and not line.startswith(rewritten):
            assert line in running, f"repo config line not used by the embedded broker: {line}"
    assert "max_queued_messages 1000000" in running
    assert f"listener {broker.port} 127.0.0.1" in running
    assert f"Config loaded from {broker.data_dir / 'mosquitto.conf'}" in broker.log_path.read_text()


def test_mqtt5_publish_subscribe_at_qos1(broker: EmbeddedBroker, connect: Callable[..., Connection]) -> None:
    subscriber = connect(broker, "sub")
    assert subscriber.connack is not None and not subscriber.connack.is_failure
    subscriber.subscribe("corridor/qos1-test/+/state")
    publisher = connect(broker, "pub")
    publisher.publish_all("corridor/qos1-test/shuttle-01/state", numbered(200))

    assert subscriber.inbox.wait_for(200) == numbered(200)
    assert subscriber.inbox.qos == {1}


def test_payload_over_the_hubs_1mib_limit_still_reaches_the_hub(
    broker: EmbeddedBroker, connect: Callable[..., Connection]
) -> None:
    # The hub quarantines > 1 MiB payloads with a reason; the broker must deliver them, not drop them.
    subscriber = connect(broker, "sub")
    subscriber.subscribe("corridor/big-test/+/state")
    big = b"[" + b"0," * (768 * 1024) + b"0]"  # 1.5 MiB
    connect(broker, "pub").publish_all("corridor/big-test/robot-01/state", [big])

    assert subscriber.inbox.wait_for(1) == [big]


def test_persistent_session_keeps_queued_messages_across_a_broker_restart(
    fresh_broker: EmbeddedBroker, connect: Callable[..., Connection]
) -> None:
    # clean_start=False from the very first connect, as ingest does. Measured with mosquitto 2.0.11: a
    # session created with clean_start=True (paho's default for the first connect) is not restored from
    # mosquitto.db after a restart, even with a session expiry; created with clean_start=False it is.
    hub = connect(fresh_broker, "hub", clean_start=False, session_expiry=3600)
    hub.subscribe("corridor/+/+/+")
    hub.close()  # offline: its session (subscription and queue) stays on the broker

    connect(fresh_broker, "device").publish_all("corridor/acme/bus-07/state", numbered(300))
    fresh_broker.restart()

    hub = connect(fresh_broker, "hub", clean_start=False, session_expiry=3600)
    assert hub.session_present, "the broker forgot the persistent session across the restart"
    assert hub.inbox.wait_for(300) == numbered(300)  # no resubscribe: the subscription persisted too


def test_offline_session_queues_far_more_than_mosquittos_default_1000(
    broker: EmbeddedBroker, connect: Callable[..., Connection]
) -> None:
    # mosquitto's default max_queued_messages (1,000) drops the rest silently, after PUBACKing them.
    hub = connect(broker, "hub", clean_start=False, session_expiry=3600)
    hub.subscribe("corridor/queue-test/+/+")
    hub.close()

    device = connect(broker, "device")
    device.publish_all("corridor/queue-test/robot-02/network", numbered(5000))

    hub = connect(broker, "hub", clean_start=False, session_expiry=3600)
    assert hub.session_present
    received = hub.inbox.wait_for(5000)
    assert len(received) == 5000
    assert received == numbered(5000)


def test_amqtt_fallback_speaks_mqtt311_at_qos1(tmp_path: Path, connect: Callable[..., Connection]) -> None:
    # The demo's broker when mosquitto is missing. amqtt does not speak MQTT v5 (a v5 CONNECT with
    # properties gets no CONNACK at all), so the broker says so and clients use 3.1.1.
    with EmbeddedBroker(tmp_path / "amqtt", force_amqtt=True) as demo_broker:
        assert demo_broker.kind == AMQTT_KIND
        assert not demo_broker.supports_mqtt5

        v311 = MQTTProtocolVersion.MQTTv311
        subscriber = connect(demo_broker, "sub", protocol=v311)
        subscriber.subscribe("corridor/+/+/state")
        publisher = connect(demo_broker, "pub", protocol=v311)
        publisher.publish_all("corridor/demo/car-01/state", numbered(500))

        assert subscriber.inbox.wait_for(500) == numbered(500)
        assert subscriber.inbox.qos == {1}
        publisher.close()
        subscriber.close()
