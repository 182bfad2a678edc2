"""The MQTT side of ingest: one paho-mqtt 2.x client with a persistent session and manual acks.

- MQTT 5 by default: ``clean_start=False`` with a Session Expiry Interval (expiry 0 would keep no
  session at all), and a large Receive Maximum, since with acknowledge-after-commit every message of a
  flush is unacknowledged at once.  MQTT 3.1.1 on request, or when the broker refuses 5.
- QoS 1 subscription to ``corridor/+/+/+`` or, with a group, ``$share/{group}/corridor/+/+/+``.
- Reconnects with backoff (paho's own loop), resubscribing on every connect.
- A message id is only meaningful on the connection it came on: every delivery carries the
  connection's generation and acknowledgements for an older generation are skipped (the broker
  redelivers those, and dedup drops them).
- Why a connection attempt fails (refused, unknown host, TLS, credentials...) is logged in words: once
  when it starts, again when the reason changes, and as a reminder every ``REMIND_S`` while it lasts.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest.buffer import Delivery
from ingest.decode import RawMessage
from ingest.status import IngestCounters
from store.errors import BrokerError, ConfigError
from store.settings import BrokerAddress, Settings

log = logging.getLogger("corridorhub.ingest")

_UNSUPPORTED_PROTOCOL = 132  # CONNACK reason code in MQTT 5
_V311_REFUSED_PROTOCOL = 1  # CONNACK return code in MQTT 3.1.1
_REFUSED_CREDENTIALS = (4, 5, 134, 135)  # 3.1.1: bad user name or password, not authorized; and MQTT 5's

#: While connecting keeps failing for the same reason, it is logged again at most this often.
REMIND_S = 60.0


def subscription_topic(settings: Settings) -> str:
    if settings.group:
        return f"$share/{settings.group}/{settings.topic}"
    return settings.topic


class _Client(mqtt.Client):
    """paho's client, remembering why its last connection attempt failed (paho's ``on_connect_fail`` is
    told nothing)."""

    last_connect_error: OSError | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_connect_error = exc
            raise


def describe_connect_error(exc: OSError | None, address: BrokerAddress, timeout_s: float) -> str:
    """Why a connection attempt failed, in words an operator can act on."""
    where = f"{address.host}:{address.port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name {address.host!r} ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: nothing listens on {where} (is the broker running, on that port?)"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} within {timeout_s:g} s (host down, or a firewall drops the packets)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate cannot be verified: {exc.verify_message or exc}"
    if isinstance(exc, ssl.SSLError) or (address.tls and isinstance(exc, ConnectionError)):
        return f"the TLS handshake failed ({exc}); is {where} a TLS listener?"
    if isinstance(exc, ConnectionError):
        return f"{where} closed the connection ({exc.strerror or exc}); is it an MQTT broker?"
    if exc is None:
        return "the connection failed"
    return f"{exc.strerror or exc} ({where})"


class _ConnectFailures:
    """Why connecting fails, logged so that an operator sees it without a flood: each reason when it
    first comes up and then at most every ``remind_s`` (with how many attempts failed since when)."""

    def __init__(self, address: BrokerAddress, remind_s: float | None = None) -> None:
        self.address = address
        self.remind_s = REMIND_S if remind_s is None else remind_s
        self.attempts = 0  # failed attempts since the last successful connection
        self.reason: str | None = None
        self._since: float | None = None
        self._logged: dict[str, float] = {}  # reason -> monotonic time it was last logged
        self._armed = False
        self._lock = threading.Lock()

    def failed(self, reason: str) -> None:
        with self._lock:
            self.attempts += 1
            self.reason = reason
            self._since = self._since or time.time()
            if self._armed:
                self._log(reason)

    def arm(self) -> bool:
        """Log from now on (start-up is over: it reports its own failures); log the reason so far, if any.
        True when there was one."""
        with self._lock:
            self._armed = True
            if self.reason is not None:
                self._log(self.reason)
            return self.reason is not None

    def connected(self) -> None:
        with self._lock:
            self.attempts, self.reason, self._since = 0, None, None
            self._logged.clear()

    def _log(self, reason: str) -> None:
        now = time.monotonic()
        last = self._logged.get(reason)
        if last is not None and now - last < self.remind_s:
            return
        self._logged[reason] = now
        if last is None:
            log.warning("cannot connect to broker %s, retrying in the background: %s", self.address, reason)
        else:
            since = datetime.fromtimestamp(self._since or time.time()).isoformat(timespec="seconds")
            log.warning(
                "still cannot connect to broker %s (%d attempts since %s), retrying: %s",
                self.address,
                self.attempts,
                since,
                reason,
            )


class BrokerSession:
    """Owns the paho client; hands each message to ``on_delivery`` (which may block: backpressure)."""

    def __init__(
        self,
        settings: Settings,
        on_delivery: Callable[[Delivery], None],
        counters: IngestCounters,
    ) -> None:
        self.settings = settings
        self.address = settings.broker_address
        self.on_delivery = on_delivery
        self.counters = counters
        self.generation = 0
        self.protocol = (
            MQTTProtocolVersion.MQTTv5 if settings.mqtt_version == "5" else MQTTProtocolVersion.MQTTv311
        )
        self._connack = threading.Event()
        # The first attempt has an outcome: CONNACK, a refusal that retrying cannot fix, or a failed connect.
        self._answered = threading.Event()
        self._refused_reason: str | None = None
        self._client: _Client | None = None
        self._ack_lock = threading.Lock()
        self._stopping = False
        self.failures = _ConnectFailures(self.address)

    # -- connecting -------------------------------------------------------------------------------

    def _new_client(self) -> _Client:
        v5 = self.protocol is MQTTProtocolVersion.MQTTv5
        client = _Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.settings.client_id,
            clean_session=None if v5 else False,
            protocol=self.protocol,
            manual_ack=True,
        )
        if self.address.username is not None:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            ca = str(self.settings.ca_file) if self.settings.ca_file else None
            try:
                client.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError) as exc:  # missing, unreadable or not a certificate
                raise ConfigError(f"Setting 'ca_file' cannot be used ({ca}): {exc}") from None
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        return client

    def _connect_properties(self) -> Properties | None:
        if self.protocol is not MQTTProtocolVersion.MQTTv5:
            return None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        return props

    def start(self, first_connect_timeout_s: float = 10.0) -> None:
        """Connect (falling back to MQTT 3.1.1 if the broker refuses 5) and start the network thread.

        An unreachable broker is not fatal: paho keeps retrying with backoff, and we log it.  Refused
        credentials and a TLS certificate that does not verify are: retrying cannot fix them.
        """
        self._launch()
        answered = self._answered.wait(first_connect_timeout_s)
        # Some brokers (amqtt) answer an MQTT 5 CONNECT with properties by saying nothing at all:
        # a socket that is open with no CONNACK after the timeout counts as a refusal of MQTT 5.
        client = self._client
        silent = not answered and client is not None and client.socket() is not None
        if (self._refused_reason == "protocol" or silent) and self.protocol is MQTTProtocolVersion.MQTTv5:
            log.warning("broker %s refused MQTT 5; falling back to MQTT 3.1.1", self.address)
            self.stop(disconnect=False)
            self.protocol = MQTTProtocolVersion.MQTTv311
            self._refused_reason = None
            self._launch()
            self._answered.wait(first_connect_timeout_s)
        if self._connack.is_set():
            self.failures.arm()
            return
        if self._refused_reason == "auth":
            self.stop(disconnect=False)
            raise BrokerError(f"broker {self.address} refused our credentials")
        problem, fatal = self._tls_problem() if self.address.tls else (None, False)
        if problem is not None and fatal:
            self.stop(disconnect=False)
            ca = self.settings.ca_file or "the system's CA certificates"
            raise BrokerError(f"TLS to broker {self.address} failed: {problem} (CA file: {ca})")
        if not self.failures.arm():  # logs why the first attempt failed
            log.warning("broker %s not reachable yet; retrying in the background", self.address)

    def _tls_problem(self) -> tuple[str | None, bool]:
        """Why a TLS handshake with the broker fails, and whether for good (a certificate our CA does not
        verify); (None, False) when it succeeds or the broker is just not reachable."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # what paho's tls_set builds
        if self.settings.ca_file:
            context.load_verify_locations(str(self.settings.ca_file))
        else:
            context.load_default_certs()
        try:
            with (
                socket.create_connection((self.address.host, self.address.port), timeout=15) as sock,
                context.wrap_socket(sock, server_hostname=self.address.host),
            ):
                return None, False
        except ssl.SSLCertVerificationError as exc:
            return f"the broker's certificate cannot be verified: {exc.verify_message or exc}", True
        except (ssl.SSLError, ConnectionResetError) as exc:  # the port answered, the handshake did not
            return f"the TLS handshake failed ({exc}); is this port a TLS listener?", False
        except OSError:
            return None, False

    def _launch(self) -> None:
        self._connack.clear()
        self._answered.clear()
        self._stopping = False
        client = self._client = self._new_client()
        client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=30,
            clean_start=False,
            properties=self._connect_properties(),
        )
        client.loop_start()

    def stop(self, *, disconnect: bool = True) -> None:
        client = self._client
        if client is None:
            return
        self._stopping = True
        if disconnect:
            client.disconnect()
        client.loop_stop()
        self._client = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected()

    # -- callbacks (never raise) -------------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            value = reason.value
            if self._answered.is_set():  # after start-up: paho retries with backoff; say why it fails
                credentials = value in _REFUSED_CREDENTIALS
                self.failures.failed(
                    f"the broker refused our credentials ({reason})"
                    if credentials
                    else f"the broker refused the connection ({reason})"
                )
                return
            if value in (_UNSUPPORTED_PROTOCOL, _V311_REFUSED_PROTOCOL):
                self._refused_reason = "protocol"
                client.disconnect()
            elif value in _REFUSED_CREDENTIALS:
                self._refused_reason = "auth"
                client.disconnect()
            log.error("broker %s refused the connection: %s", self.address, reason)
            if self._refused_reason is not None:
                self._answered.set()
            return
        self.failures.connected()
        self.generation += 1
        with self.counters.lock:
            self.counters.connected = True
            self.counters.connects += 1
            self.counters.protocol = "5" if self.protocol is MQTTProtocolVersion.MQTTv5 else "3.1.1"
        topic = subscription_topic(self.settings)
        result, _mid = client.subscribe(topic, qos=1)
        log.info(
            "connected to %s (MQTT %s, session %s); subscribing to %s",
            self.address,
            self.counters.protocol,
            "resumed" if flags.session_present else "new",
            topic,
        )
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("subscribe to %s failed: %s", topic, mqtt.error_string(result))
        self._connack.set()
        self._answered.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # No TCP connection or no TLS handshake; paho retries with backoff.
        error = client.last_connect_error if isinstance(client, _Client) else None
        self.failures.failed(describe_connect_error(error, self.address, client.connect_timeout))
        self._answered.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        for code in reason_codes:
            if code.is_failure:
                log.error("broker refused the subscription: %s", code)
                return
        with self.counters.lock:
            self.counters.subscribed = True
        log.info("subscribed to %s", subscription_topic(self.settings))

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self.counters.lock:
            was_connected = self.counters.connected
            self.counters.connected = False
            self.counters.subscribed = False
        if (
            not self._connack.is_set()
            and self._refused_reason is None
            and self.protocol is MQTTProtocolVersion.MQTTv5
        ):
            # The socket opened but no CONNACK came: some brokers just hang up on MQTT 5.
            self._refused_reason = "protocol"
            self._answered.set()
        if was_connected and not self._stopping:
            log.warning("disconnected from %s: %s; reconnecting", self.address, reason)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        raw = RawMessage(message.topic, bytes(message.payload), time.time_ns() // 1000)
        self.on_delivery(Delivery(raw, message.mid, message.qos, self.generation))

    # -- acknowledging -----------------------------------------------------------------------------

    def ack(self, deliveries: Iterable[Delivery]) -> int:
        """PUBACK every delivery of the current connection, in order of receipt; returns how many."""
        client = self._client
        if client is None:
            return 0
        generation = self.generation
        sent = 0
        with self._ack_lock:
            for d in deliveries:
                if d.qos and d.generation == generation:
                    if client.ack(d.mid, d.qos) == MQTTErrorCode.MQTT_ERR_SUCCESS:
                        sent += 1
                elif not d.qos:
                    sent += 1
        return sent
