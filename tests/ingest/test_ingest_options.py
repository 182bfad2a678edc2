"""Ingest options against real parts: shared-subscription groups, MQTT 3.1.1 and 5 persistent sessions,
username/password, TLS, and the bounded buffer under a lake that refuses commits.

Brokers with their own authentication or TLS listener are mosquitto processes started here from the
repo's ``deploy/mosquitto.conf`` (rendered by ``corridorhub.broker.render_config``) plus a few lines;
the embedded broker waits for an anonymous plain-TCP CONNACK, which such a broker never gives.
Nothing is mocked and nothing skips: a missing tool fails with what to install.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import ingest_settings, lake_keys, running_ingestor, wait_until

from corridorhub.broker import REPO_CONFIG, EmbeddedBroker, find_mosquitto, free_port, render_config
from corridorhub.simulator import SimConfig, SimMessage, expected_rows, generate
from corridorhub.simulator.publish import publish
from ingest import Ingestor, session
from store.errors import BrokerError, ConfigError
from store.settings import BrokerAddress, Settings

START = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
USER = "corridor-hub"
PASSWORD = "Kamata-5G-s3cret"

MOSQUITTO_PASSWD_HINT = (
    "mosquitto_passwd is missing; it ships with the broker: sudo apt-get install mosquitto"
)
OPENSSL_HINT = "the openssl command is missing: sudo apt-get install openssl"


def _sim(
    devices: int, duration_s: float, seed: int, *, rate_hz: float = 5, batch: int = 1
) -> list[SimMessage]:
    config = SimConfig(
        devices=devices, rate_hz=rate_hz, duration_s=duration_s, seed=seed, start=START, batch=batch
    )
    return list(generate(config))


def _assert_landed_once(lake: Path, messages: list[SimMessage]) -> None:
    keys = lake_keys(lake)
    expected = expected_rows(messages)
    assert set(keys) == expected, (
        f"missing {len(expected - set(keys))}, unexpected {len(set(keys) - expected)}"
    )
    assert max(keys.values()) == 1, "a sample landed twice"


def _wait_acked(ingestor: Ingestor, n: int, timeout: float = 30) -> None:
    assert wait_until(lambda: ingestor.counters.messages_acked >= n, timeout=timeout), (
        ingestor.counters.snapshot()
    )


def _start_error(settings: Settings, timeout: float = 15) -> BaseException:
    """Run an Ingestor that must fail at start; the error it raised.  Fails if it keeps running."""
    ingestor = Ingestor(settings)
    stop = threading.Event()
    errors: list[BaseException] = []

    def _run() -> None:
        try:
            ingestor.run(stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=_run, name="failing-ingest", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        stop.set()
        thread.join(30)
        pytest.fail(
            f"ingest kept running for {timeout:g} s instead of failing: {ingestor.counters.snapshot()}"
        )
    assert errors, "ingest stopped without an error"
    return errors[0]


# -- brokers with their own configuration ------------------------------------------------------------


def _tool(name: str, hint: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.fail(hint, pytrace=False)
    return found


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ConfiguredBroker:
    """mosquitto from the repo's config plus ``extra`` lines (auth, TLS), on a free loopback port."""

    def __init__(self, data_dir: Path, extra: list[str], scheme: str = "mqtt") -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.scheme = scheme
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, userinfo: str = "") -> str:
        return f"{self.scheme}://{userinfo}127.0.0.1:{self.port}"

    def __enter__(self) -> ConfiguredBroker:
        executable = find_mosquitto()
        if executable is None:
            pytest.fail("the tests need a real mosquitto: sudo apt-get install mosquitto", pytrace=False)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        rendered = render_config(
            REPO_CONFIG.read_text(encoding="utf-8"),
            port=self.port,
            data_dir=self.data_dir,
            run_as_root=os.geteuid() == 0,
        )
        # Added after the one listener line, so listener options (TLS files) apply to it.
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(rendered + "\n# --- added by the test ---\n" + "\n".join(self.extra) + "\n")
        with (self.data_dir / "mosquitto.stderr").open("ab") as errors:
            process = self.process = subprocess.Popen(
                [executable, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=errors, stderr=errors
            )
        if not wait_until(lambda: _port_open(self.port) or process.poll() is not None, 15, 0.05):
            self.__exit__(None, None, None)
            pytest.fail(f"mosquitto did not open port {self.port}:\n{self.log()}", pytrace=False)
        if process.poll() is not None:
            pytest.fail(f"mosquitto exited at start:\n{self.log()}", pytrace=False)
        return self

    def log(self) -> str:
        return "".join(
            (self.data_dir / name).read_text(errors="replace")
            for name in ("mosquitto.stderr", "mosquitto.log")
            if (self.data_dir / name).exists()
        )

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredBroker]:
    """mosquitto refusing anonymous clients, with one user in a password file."""
    folder = tmp_path_factory.mktemp("auth-broker")
    passwd = folder / "passwd"
    subprocess.run(
        [_tool("mosquitto_passwd", MOSQUITTO_PASSWD_HINT), "-b", "-c", str(passwd), USER, PASSWORD],
        check=True,
        capture_output=True,
    )
    passwd.chmod(0o600)
    with ConfiguredBroker(folder, ["allow_anonymous false", f"password_file {passwd}"]) as started:
        yield started


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run([_tool("openssl", OPENSSL_HINT), *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"openssl {' '.join(args)}:\n{result.stderr}"


def _make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=corridorhub {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.crt", folder / f"{name}.key"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate it signed for 127.0.0.1/localhost, and an unrelated CA."""
    folder = tmp_path_factory.mktemp("tls")
    ca_crt, ca_key = _make_ca(folder, "ca")
    other_crt, _ = _make_ca(folder, "other-ca")
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", ca_crt.name, "-CAkey", ca_key.name, "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=folder,
    )  # fmt: skip
    return {"ca": ca_crt, "other_ca": other_crt, "cert": folder / "server.crt", "key": folder / "server.key"}


@pytest.fixture(scope="module")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, tls_files: dict[str, Path]
) -> Iterator[ConfiguredBroker]:
    extra = [f"cafile {tls_files['ca']}", f"certfile {tls_files['cert']}", f"keyfile {tls_files['key']}"]
    with ConfiguredBroker(tmp_path_factory.mktemp("tls-broker"), extra, scheme="mqtts") as started:
        yield started


# -- --group: shared subscription ---------------------------------------------------------------------


def test_two_workers_in_one_group_split_the_stream_and_it_lands_once(
    broker: EmbeddedBroker, lake_dir: Path
) -> None:
    messages = _sim(devices=10, duration_s=10, seed=31)
    group = f"hub{os.getpid()}"
    first = ingest_settings(broker.url, lake_dir, group=group)
    second = ingest_settings(broker.url, lake_dir, group=group)
    assert first.client_id != second.client_id
    with running_ingestor(first) as a, running_ingestor(second) as b:
        assert wait_until(lambda: a.counters.subscribed and b.counters.subscribed, timeout=15)
        report = publish(messages, BrokerAddress.parse(broker.url), realtime=False, client_id=f"pub-{group}")
        assert report.messages == len(messages)
        assert wait_until(
            lambda: a.counters.messages_acked + b.counters.messages_acked >= len(messages), timeout=30
        ), (a.counters.snapshot(), b.counters.snapshot())
    assert a.counters.messages_received > 0 and b.counters.messages_received > 0, "one worker got nothing"
    # Each message went to one member of the group only.
    assert a.counters.messages_received + b.counters.messages_received == len(messages)
    _assert_landed_once(lake_dir, messages)


# -- persistent sessions: away and back -------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_messages_published_while_ingest_is_away_arrive_when_it_returns(
    broker: EmbeddedBroker, lake_dir: Path, version: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="corridorhub.ingest")
    messages = _sim(devices=5, duration_s=10, seed=41 if version == "5" else 43)
    half = len(messages) // 2
    settings = ingest_settings(broker.url, lake_dir, mqtt_version=version)
    address = BrokerAddress.parse(broker.url)
    with running_ingestor(settings) as ingestor:
        assert wait_until(lambda: ingestor.counters.subscribed, timeout=15)
        assert ingestor.counters.protocol == version
        publish(messages[:half], address, realtime=False, client_id=f"{settings.client_id}-pub1")
        _wait_acked(ingestor, half)
    # Ingest is away: the broker queues for its session (3.1.1 clean session false; 5: session expiry).
    publish(messages[half:], address, realtime=False, client_id=f"{settings.client_id}-pub2")
    caplog.clear()
    with running_ingestor(settings) as ingestor:
        assert ingestor.counters.protocol == version
        _wait_acked(ingestor, len(messages) - half)
    assert "session resumed" in caplog.text, caplog.text
    _assert_landed_once(lake_dir, messages)


# -- username and password ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["url", "settings"])
def test_correct_credentials_ingest_and_the_password_is_never_logged(
    auth_broker: ConfiguredBroker, lake_dir: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages = _sim(devices=3, duration_s=5, seed=51)
    if where == "url":
        settings = ingest_settings(auth_broker.url(f"{USER}:{PASSWORD}@"), lake_dir)
    else:
        settings = ingest_settings(auth_broker.url(), lake_dir, mqtt_username=USER, mqtt_password=PASSWORD)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.describe())
    with running_ingestor(settings) as ingestor:
        assert wait_until(lambda: ingestor.counters.subscribed, timeout=15), auth_broker.log()[-2000:]
        publish(messages, BrokerAddress.parse(auth_broker.url(f"{USER}:{PASSWORD}@")), realtime=False)
        _wait_acked(ingestor, len(messages))
    _assert_landed_once(lake_dir, messages)
    assert "connected to" in caplog.text
    assert PASSWORD not in caplog.text, "the password appeared in the logs"


@pytest.mark.parametrize(
    "version,user,password",
    [
        ("5", USER, "wrong-password"),
        ("3.1.1", USER, "wrong-password"),
        ("5", "nobody", PASSWORD),
        ("5", None, None),
    ],
)
def test_wrong_credentials_fail_clearly_and_quickly(
    auth_broker: ConfiguredBroker,
    lake_dir: Path,
    version: str,
    user: str | None,
    password: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = ingest_settings(
        auth_broker.url(), lake_dir, mqtt_version=version, mqtt_username=user, mqtt_password=password
    )
    error = _start_error(settings)
    assert isinstance(error, BrokerError), repr(error)
    assert "refused our credentials" in str(error)
    assert "refused the connection" in caplog.text
    assert PASSWORD not in caplog.text + str(error)
    assert "wrong-password" not in caplog.text + str(error)


def test_cli_reports_refused_credentials_in_one_line(auth_broker: ConfiguredBroker, lake_dir: Path) -> None:
    args = ["ingest", "--broker", auth_broker.url(f"{USER}:wrong-password@"), "--lake", str(lake_dir)]
    done = subprocess.run(  # a process of its own: should it go on retrying, the timeout fails the test
        [sys.executable, "-m", "corridorhub", *args, "--client-id", f"cli-{os.getpid()}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: broker mqtt://{USER}:***@127.0.0.1:{auth_broker.port} refused our credentials"]
    assert "wrong-password" not in done.stdout + done.stderr


# -- TLS -----------------------------------------------------------------------------------------------------


def test_tls_with_the_right_ca_lands_the_data(
    tls_broker: ConfiguredBroker, tls_files: dict[str, Path], lake_dir: Path
) -> None:
    messages = _sim(devices=3, duration_s=5, seed=61)
    settings = ingest_settings(tls_broker.url(), lake_dir, ca_file=tls_files["ca"])
    assert settings.broker_address.tls
    with running_ingestor(settings) as ingestor:
        assert wait_until(lambda: ingestor.counters.subscribed, timeout=15), tls_broker.log()[-2000:]
        publish(messages, BrokerAddress.parse(tls_broker.url()), realtime=False, ca_file=tls_files["ca"])
        _wait_acked(ingestor, len(messages))
    _assert_landed_once(lake_dir, messages)


def test_tls_with_a_wrong_ca_fails_clearly(
    tls_broker: ConfiguredBroker, tls_files: dict[str, Path], lake_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ingest_settings(tls_broker.url(), lake_dir, ca_file=tls_files["other_ca"])
    error = _start_error(settings)
    assert isinstance(error, BrokerError), repr(error)
    assert "certificate cannot be verified" in str(error) and str(tls_files["other_ca"]) in str(error)
    # The CLI says the same in one line (a process of its own: were it to go on retrying, the
    # timeout fails the test instead of hanging the suite).
    args = ["ingest", "--broker", tls_broker.url(), "--ca-file", str(tls_files["other_ca"])]
    done = subprocess.run(
        [sys.executable, "-m", "corridorhub", *args, "--lake", str(lake_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert [ln for ln in done.stderr.splitlines() if ln.startswith("Error: ")] == [f"Error: {error}"]


def test_tls_to_a_plain_listener_says_so_while_it_retries(
    broker: EmbeddedBroker, tls_files: dict[str, Path], lake_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="corridorhub.ingest")
    plain_port = BrokerAddress.parse(broker.url).port
    settings = ingest_settings(f"mqtts://127.0.0.1:{plain_port}", lake_dir, ca_file=tls_files["ca"])
    with running_ingestor(settings) as ingestor:
        assert not ingestor.counters.connected
    assert "TLS handshake failed" in caplog.text and "TLS listener?" in caplog.text, caplog.text


def test_tls_with_a_missing_ca_file_fails_by_name(tls_broker: ConfiguredBroker, lake_dir: Path) -> None:
    settings = ingest_settings(tls_broker.url(), lake_dir, ca_file=lake_dir.parent / "no-such-ca.crt")
    error = _start_error(settings)
    assert isinstance(error, ConfigError) and "'ca_file'" in str(error), repr(error)


# -- why connecting fails -----------------------------------------------------------------------------------


def _cannot_connect(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings that say why connecting fails, not counting the reminders ("still cannot ...")."""
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("cannot connect to broker")]


def test_an_unknown_host_is_named_once_while_ingest_retries(
    lake_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="corridorhub.ingest")
    with running_ingestor(ingest_settings("mqtt://broker.invalid:1883", lake_dir)) as ingestor:
        assert wait_until(lambda: ingestor.session.failures.attempts >= 3, timeout=60)
        assert not ingestor.counters.connected
    [line] = _cannot_connect(caplog)
    assert "cannot resolve the host name 'broker.invalid'" in line


def test_a_lasting_failure_is_recalled_with_the_count_of_attempts(
    lake_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "REMIND_S", 0.0)  # a reminder on every attempt instead of every minute
    caplog.set_level(logging.INFO, logger="corridorhub.ingest")
    with running_ingestor(ingest_settings(f"mqtt://127.0.0.1:{free_port()}", lake_dir)) as ingestor:
        assert wait_until(lambda: ingestor.session.failures.attempts >= 3, timeout=60)
    assert len(_cannot_connect(caplog)) == 1
    reminders = [r.getMessage() for r in caplog.records if r.getMessage().startswith("still cannot connect")]
    assert len(reminders) >= 2 and "(2 attempts since " in reminders[0] and "(3 attempts" in reminders[1]
    assert all("connection refused" in line for line in reminders)


def test_each_new_reason_is_logged_once_refused_then_bad_credentials(
    auth_broker: ConfiguredBroker, lake_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ingest starts before its broker; the broker comes up and refuses the password.  Ingest keeps trying
    (the password may be fixed at the broker) and says each reason once, never the password."""
    caplog.set_level(logging.INFO, logger="corridorhub.ingest")
    passwd = auth_broker.data_dir / "passwd"
    late = ConfiguredBroker(tmp_path / "late-broker", ["allow_anonymous false", f"password_file {passwd}"])
    settings = ingest_settings(late.url(f"{USER}:wrong-password@"), lake_dir)
    with running_ingestor(settings) as ingestor:
        failures = ingestor.session.failures
        assert wait_until(lambda: failures.attempts >= 2, timeout=60)
        with late:
            assert wait_until(lambda: "credentials" in (failures.reason or ""), timeout=60), late.log()
            refused = failures.attempts
            assert wait_until(lambda: failures.attempts > refused, timeout=60)  # it goes on trying
            assert "credentials" in (failures.reason or "")
    lines = _cannot_connect(caplog)
    assert len(lines) == 2, lines
    assert f"connection refused: nothing listens on 127.0.0.1:{late.port}" in lines[0]
    assert "the broker refused our credentials" in lines[1]
    assert f"mqtt://{USER}:***@127.0.0.1:{late.port}" in lines[1]
    assert "wrong-password" not in caplog.text


# -- bounded buffer --------------------------------------------------------------------------------------


def test_a_full_buffer_stops_taking_messages_until_commits_succeed_again(
    broker: EmbeddedBroker, lake_dir: Path
) -> None:
    # Batch messages of 150 samples: about 40-50 KiB each, under the 64 KiB payload limit.
    messages = _sim(devices=25, duration_s=60, seed=71, rate_hz=10, batch=150)
    sizes = [len(m.payload) for m in messages]
    assert max(sizes) < 64 * 2**10 and sum(sizes) > 3 * 2**20, (max(sizes), sum(sizes))
    settings = ingest_settings(broker.url, lake_dir, buffer_bytes=2**20, max_payload_bytes=64 * 2**10)
    with running_ingestor(settings) as ingestor:
        day = START.date().isoformat()  # the whole run falls on this UTC day
        blockers = [lake_dir / stream / f"date={day}" for stream in ("state", "event", "network")]
        for blocker in blockers:
            blocker.write_bytes(b"in the way")  # a file where the partition folder must go
        try:
            report = publish(
                messages, BrokerAddress.parse(broker.url), realtime=False, client_id="buffer-pub"
            )
            assert report.messages == len(messages)  # the broker holds them for us
            assert wait_until(lambda: ingestor.counters.commit_failures > 0, timeout=15)
            received = ingestor.counters.messages_received
            time.sleep(1.5)
            assert ingestor.counters.messages_received == received, "kept taking messages with a full buffer"
            assert 0 < received < len(messages) // 2, (received, len(messages))
            # What was taken fits the buffer (plus the one message waiting to get in).
            assert sum(sizes[:received]) <= settings.buffer_bytes + settings.max_payload_bytes
            assert ingestor.counters.messages_acked == 0, "acknowledged before a durable commit"
        finally:
            for blocker in blockers:
                blocker.unlink()
        _wait_acked(ingestor, len(messages), timeout=60)
    assert ingestor.counters.messages_received == len(messages)
    _assert_landed_once(lake_dir, messages)
