"""The embedded MQTT broker used by ``corridorhub demo``, ``corridorhub bench`` and the test suite.

``EmbeddedBroker`` runs mosquitto from the repository's own ``deploy/mosquitto.conf`` on a free loopback
port.  Only four things are rewritten, everything else is the repo's config line for line:

* the ``listener`` line becomes ``listener PORT 127.0.0.1`` (in place, so options that follow it still
  apply to it; the config must hold exactly one listener and no ``include_dir``/``port``);
* ``persistence_location`` points into the broker's data folder (``mosquitto.db`` lives there);
* ``log_dest`` becomes a file in the data folder (``mosquitto.log``; start-up errors go to
  ``mosquitto.stderr`` next to it);
* when running as root, ``user root``: mosquitto would otherwise drop to the ``mosquitto`` user, which
  cannot write a root-owned temporary folder.

The config is found relative to this package (``<repo>/deploy/mosquitto.conf``): corridorhub runs from a
clone with an editable install (that is what ``./dev`` sets up), and one copy of the file cannot drift
from another.  A wheel installed elsewhere has no repo next to it: pass ``config=`` explicitly.

When mosquitto is not installed and ``allow_fallback=True`` (the demo), the broker is amqtt, an
in-process Python broker: no persistence, no SIGKILL, and MQTT 3.1.1 only.  Measured with amqtt 0.12:
a v5 CONNECT without properties is refused ("Unsupported protocol version"), but one with properties
(session expiry, Receive Maximum: what ingest sends) gets no CONNACK at all, so a v5 client just waits.
Clients must therefore connect with 3.1.1 when ``supports_mqtt5`` is False.  The fallback is announced
with a warning and ``kind == "amqtt (demo only)"``.  Tests and benchmarks want the real broker and leave
the fallback off.

    with EmbeddedBroker(tmp_path / "broker") as broker:
        print(broker.url)        # mqtt://127.0.0.1:40213
        broker.restart()         # same port, same persistence folder
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from store.errors import BrokerError

log = logging.getLogger(__name__)

REPO_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto.conf"
"""The repository's broker configuration (see the module docstring)."""

INSTALL_HINT = "install it with: sudo apt-get install mosquitto   (Debian/Ubuntu package 'mosquitto')"
"""What to tell a user whose machine has no mosquitto."""

MOSQUITTO_KIND = "mosquitto"
AMQTT_KIND = "amqtt (demo only)"
LOOPBACK = "127.0.0.1"

# Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH.
_MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """Path of the mosquitto executable, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _MOSQUITTO_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A TCP port on the loopback interface that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def answers_mqtt_connect(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when an MQTT broker at host:port accepts an MQTT 3.1.1 CONNECT (CONNACK with return code 0).

    A raw-socket probe, so that waiting for a broker needs no client library thread.
    """
    client_id = f"corridorhub-probe-{secrets.token_hex(4)}".encode()
    variable_header = b"\x00\x04MQTT" + bytes([4, 0x02]) + (30).to_bytes(2, "big")  # v3.1.1, clean, 30 s
    body = variable_header + len(client_id).to_bytes(2, "big") + client_id
    connect = bytes([0x10, len(body)]) + body  # body < 128 bytes: one-byte remaining length
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(connect)
            connack = b""
            while len(connack) < 4:
                chunk = sock.recv(4 - len(connack))
                if not chunk:
                    return False
                connack += chunk
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return connack[0] == 0x20 and connack[3] == 0
    except OSError:
        return False


def render_config(source: str, *, port: int, data_dir: Path, run_as_root: bool) -> str:
    """The repo's mosquitto config with listener, persistence location, log destination and user rewritten."""
    out: list[str] = []
    listeners = 0
    for line in source.splitlines():
        words = line.split()
        option = words[0] if words and not words[0].startswith("#") else ""
        if option == "listener":
            listeners += 1
            if listeners > 1:
                raise BrokerError("the embedded broker supports a config with exactly one 'listener'")
            out.append(f"# rewritten by corridorhub.broker, was: {line.strip()}")
            out.append(f"listener {port} {LOOPBACK}")
        elif option in ("port", "bind_address", "include_dir"):
            raise BrokerError(
                f"the embedded broker cannot rewrite '{option}'; use one 'listener' line instead"
            )
        elif option in ("persistence_location", "log_dest", "user", "pid_file"):
            out.append(f"# dropped by corridorhub.broker: {line.strip()}")
        else:
            out.append(line)
    if listeners == 0:
        raise BrokerError("the mosquitto config has no 'listener' line")
    out += [
        "",
        "# --- added by corridorhub.broker (embedded broker) ---",
        f"persistence_location {data_dir}/",
        f"log_dest file {data_dir / 'mosquitto.log'}",
    ]
    if run_as_root:
        out.append("user root")
    return "\n".join(out) + "\n"


class EmbeddedBroker:
    """An MQTT broker on a free loopback port, for the demo, benchmarks and tests.

    ``start()`` returns once the broker answers an MQTT CONNECT; ``url`` is then ``mqtt://127.0.0.1:PORT``.
    ``stop()`` is a clean shutdown (mosquitto saves its database), ``kill()`` is SIGKILL (mosquitto keeps
    only its last autosave), ``restart()`` stops and starts again on the same port with the same
    persistence folder.  Use it as a context manager to stop it on the way out.

    ``allow_fallback`` lets it use amqtt when mosquitto is missing (the demo); ``force_amqtt`` uses amqtt
    even when mosquitto is installed (to test that fallback); ``mosquitto`` names the executable.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        config: Path | None = None,
        port: int | None = None,
        allow_fallback: bool = False,
        force_amqtt: bool = False,
        mosquitto: str | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.config = Path(config) if config is not None else REPO_CONFIG
        self.port = port or 0
        self.start_timeout = start_timeout
        self.host = LOOPBACK
        self._mosquitto = None if force_amqtt else (mosquitto or find_mosquitto())
        if self._mosquitto is None and not (allow_fallback or force_amqtt):
            raise BrokerError(f"mosquitto is not installed; {INSTALL_HINT}")
        self.kind = MOSQUITTO_KIND if self._mosquitto is not None else AMQTT_KIND
        self._process: subprocess.Popen[bytes] | None = None
        self._amqtt: _AmqttThread | None = None

    # -- public surface ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise BrokerError("the embedded broker has not been started")
        return f"mqtt://{self.host}:{self.port}"

    @property
    def supports_mqtt5(self) -> bool:
        """False for the amqtt fallback: connect to it with MQTT 3.1.1 (see the module docstring)."""
        return self.kind == MOSQUITTO_KIND

    @property
    def log_path(self) -> Path:
        """mosquitto's log file (empty for amqtt, which logs through Python logging)."""
        return self.data_dir / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        """Process id of the running mosquitto, None for amqtt or when stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._amqtt is not None

    def start(self) -> EmbeddedBroker:
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._mosquitto is not None:
            self._start_mosquitto(self._mosquitto)
        else:
            self._start_amqtt()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Clean shutdown: SIGTERM, and mosquitto writes its persistence database before it exits."""
        if self._process is not None:
            process, self._process = self._process, None
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("mosquitto did not stop within %.0f s; killing it", timeout)
                    process.kill()
                    process.wait()
        if self._amqtt is not None:
            amqtt, self._amqtt = self._amqtt, None
            amqtt.stop(timeout)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no database save (for amqtt, in-process, the same as stop())."""
        if self._process is not None:
            process, self._process = self._process, None
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()
        elif self._amqtt is not None:
            log.warning("amqtt runs in-process and cannot be SIGKILLed; stopping it instead")
            self.stop()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port with the same persistence folder."""
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"<EmbeddedBroker {self.kind} {state}>"

    # -- mosquitto ------------------------------------------------------------------------------

    def _start_mosquitto(self, executable: str) -> None:
        try:
            source = self.config.read_text(encoding="utf-8")
        except OSError as exc:
            raise BrokerError(
                f"cannot read the broker config {self.config} ({exc.strerror}); "
                "run from a corridorhub clone or pass config="
            ) from None
        pick_port = not self.port
        for _attempt in range(3):
            if pick_port:
                self.port = free_port()
            conf = self.data_dir / "mosquitto.conf"
            conf.write_text(
                render_config(source, port=self.port, data_dir=self.data_dir, run_as_root=os.geteuid() == 0),
                encoding="utf-8",
            )
            with (self.data_dir / "mosquitto.stderr").open("ab") as errors:
                # Own session: a Ctrl-C meant for the demo must not take the broker down before ingest
                # has flushed and acknowledged; we stop it ourselves, last.
                self._process = subprocess.Popen(
                    [executable, "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=errors,
                    stderr=errors,
                    start_new_session=True,
                )
            if self._wait_until_responds():
                log.info("mosquitto %s running on %s (pid %d)", executable, self.url, self._process.pid)
                return
            exited = self._process.poll() is not None
            self.kill()
            if not (exited and pick_port and "Address already in use" in self._log_tail()):
                break  # a port race is worth another try; anything else is not
        raise BrokerError(f"mosquitto did not start on port {self.port}:\n{self._log_tail()}")

    def _wait_until_responds(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                return False
            if answers_mqtt_connect(self.host, self.port, timeout=1.0):
                return True
            time.sleep(0.05)
        return False

    def _log_tail(self, lines: int = 20) -> str:
        text = ""
        for name in ("mosquitto.stderr", "mosquitto.log"):
            path = self.data_dir / name
            if path.exists():
                text += "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        return text.strip() or "(mosquitto wrote nothing)"

    # -- amqtt fallback -------------------------------------------------------------------------

    def _start_amqtt(self) -> None:
        log.warning(
            "mosquitto is not installed: using amqtt, an in-process Python broker. DEMO ONLY: MQTT 3.1.1, "
            "no persistence, slower. For real capture, %s",
            INSTALL_HINT,
        )
        if not self.port:
            self.port = free_port()
        self._amqtt = _AmqttThread(self.host, self.port)
        try:
            self._amqtt.start(self.start_timeout)
        except BrokerError:
            self._amqtt = None
            raise
        if not self._wait_until_responds():
            self.stop()
            raise BrokerError(f"amqtt did not answer on port {self.port}; {INSTALL_HINT}")
        log.info("amqtt (demo only) running on %s", self.url)


class _AmqttThread:
    """amqtt's asyncio broker on its own event loop in a daemon thread."""

    def __init__(self, host: str, port: int) -> None:
        self._config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._broker: Any = None
        self._broker_class: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise BrokerError(f"mosquitto is not installed and neither is amqtt; {INSTALL_HINT}") from None
        # Per-connection INFO lines (amqtt's own and its state machine's) would drown the demo's output.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self._broker_class = Broker
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise BrokerError(f"amqtt did not start: {self._error!r}; {INSTALL_HINT}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._create_and_start())
        except Exception as exc:  # noqa: BLE001 - reported to start() in the calling thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _create_and_start(self) -> None:
        # Built inside its loop: amqtt creates futures in __init__ that must belong to this loop.
        self._broker = self._broker_class(self._config)
        await self._broker.start()

    def stop(self, timeout: float) -> None:
        if self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                future.result(timeout)
            except Exception as exc:  # noqa: BLE001 - a failed shutdown must not hide the demo's result
                log.warning("amqtt shutdown failed: %r", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
