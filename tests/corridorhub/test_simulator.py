"""The corridor simulator: determinism, plausible data within the contract, faults with ground truth."""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import os
import pty
import re
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from corridorhub.cmd_simulate import SendProgress, command
from corridorhub.simulator import (
    CORRIDOR_BBOX,
    DEFAULT_FAULTS,
    MALFORMED_KINDS,
    ROUTES,
    FaultRates,
    SimConfig,
    SimMessage,
    Simulation,
    expected_rows,
    generate,
)
from corridorhub.simulator.publish import publish
from store.errors import BrokerError, ConfigError
from store.schema import (
    DEVICE_TYPES,
    EVENT_KINDS,
    IDENTIFIER_PATTERN,
    MAX_BATCH_SAMPLES,
    QUARANTINE_REASONS,
    SCHEMAS,
    STREAMS,
    Source,
)
from store.settings import BrokerAddress

START = datetime.fromisoformat("2025-04-01T09:00:00+09:00")
START_MS = int(START.timestamp() * 1000)
RECEIVED_MS = START_MS + 3_600_000  # when the hub is taken to receive the samples
TOPIC = re.compile(rf"corridor/({IDENTIFIER_PATTERN})/({IDENTIFIER_PATTERN})/(state|event|network)")
HEAVY_FAULTS = FaultRates(malformed=0.05, duplicate=0.03, reorder=0.03, late=0.01, skew=0.03, gap=0.03)


def run(**kw: Any) -> list[SimMessage]:
    kw.setdefault("devices", 12)
    kw.setdefault("rate_hz", 2.0)
    kw.setdefault("duration_s", 60.0)
    kw.setdefault("seed", 7)
    kw.setdefault("start", START)
    return list(generate(SimConfig(**kw)))


def samples_of(message: SimMessage) -> list[Any]:
    value = orjson.loads(message.payload)
    return value if isinstance(value, list) else [value]


def valid_samples(messages: list[SimMessage]) -> Iterator[tuple[SimMessage, dict[str, Any]]]:
    """Every valid sample (first deliveries only) with its message."""
    for m in messages:
        if m.duplicate or m.expected_reason is not None:
            continue
        for i, sample in enumerate(samples_of(m)):
            if not m.sample_reasons or m.sample_reasons[i] is None:
                yield m, sample


def contract_violations(stream: str, sample: dict[str, Any]) -> list[str]:
    """An independent reading of store.schema: what is wrong with one sample (nothing, for a valid one)."""
    problems = []
    for column in SCHEMAS[stream].columns:
        if column.source is not Source.PAYLOAD:
            continue
        value = sample.get(column.name)
        if value is None:
            if column.required:
                problems.append(f"{column.name} missing")
            continue
        if column.name == "ts":
            if isinstance(value, str):
                if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d", value):
                    problems.append(f"ts {value!r} is not RFC 3339 with an offset")
            elif type(value) is not int:
                problems.append(f"ts {value!r} has the wrong type")
            if not problems and not 946_684_800_000 <= ts_ms(value) <= RECEIVED_MS + 86_400_000:
                problems.append(f"ts {value!r} before 2000 or more than a day after receipt")
            continue
        kind = column.type
        if str(kind) == "double" and type(value) not in (int, float):
            problems.append(f"{column.name} {value!r} is not a number")
            continue
        if str(kind) == "int64" and type(value) is not int:
            problems.append(f"{column.name} {value!r} is not an integer")
            continue
        if (
            str(kind) == "string"
            and type(value) is not str
            and not (column.name == "cell_id" and type(value) is int)
        ):
            problems.append(f"{column.name} {value!r} is not text")
            continue
        if column.minimum is not None and value < column.minimum:
            problems.append(f"{column.name} {value} below {column.minimum}")
        if column.maximum is not None and (
            value >= column.maximum if column.maximum_exclusive else value > column.maximum
        ):
            problems.append(f"{column.name} {value} above {column.maximum}")
        if column.allowed and value not in column.allowed:
            problems.append(f"{column.name} {value!r} not allowed")
    return problems


def ts_ms(value: int | str) -> int:
    if isinstance(value, int):
        return value
    return round(datetime.fromisoformat(value).timestamp() * 1000)


# -- determinism -----------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes_and_another_seed_does_not() -> None:
    a = run(faults=DEFAULT_FAULTS, batch=3)
    b = run(faults=DEFAULT_FAULTS, batch=3)
    assert [(m.topic, m.payload) for m in a] == [(m.topic, m.payload) for m in b]
    assert a == b
    c = run(faults=DEFAULT_FAULTS, batch=3, seed=8)
    assert [(m.topic, m.payload) for m in a] != [(m.topic, m.payload) for m in c]


def test_faults_do_not_change_what_devices_do() -> None:
    clean = {(m.topic, m.payload) for m in run()}
    gappy = run(faults=FaultRates(gap=0.1, duplicate=0.05, reorder=0.05))
    assert {(m.topic, m.payload) for m in gappy} < clean


def test_messages_come_in_send_order_within_the_run() -> None:
    messages = run(faults=HEAVY_FAULTS)
    times = [m.send_at for m in messages]
    assert times == sorted(times)
    assert times[0] >= 0 and times[-1] <= 60.0


def test_device_ids_are_unique_across_the_fleet() -> None:
    """A device is (operator, device_id), but two operators run shuttles: each id names one device, so that
    counting distinct ids counts devices."""
    topics = {m.topic for m in run(devices=60, duration_s=2.0)}
    devices = {tuple(t.split("/")[1:3]) for t in topics if TOPIC.fullmatch(t)}
    assert len(devices) == 60
    assert len({device_id for _, device_id in devices}) == 60
    shuttles = {(operator, d) for operator, d in devices if d.startswith("shuttle-")}
    assert len({operator for operator, _ in shuttles}) == 2  # the case where ids used to repeat


# -- plausible data within the contract ------------------------------------------------------------
def test_routes_and_positions_stay_inside_the_corridor() -> None:
    lat_min, lon_min, lat_max, lon_max = CORRIDOR_BBOX
    for route in ROUTES:
        assert all(lat_min < lat < lat_max and lon_min < lon < lon_max for lat, lon in route.waypoints)
        assert route.length_m > 300
    positions = [(s["lat"], s["lon"]) for m, s in valid_samples(run(duration_s=300)) if "lat" in s]
    assert len(positions) > 1000
    assert all(lat_min < lat < lat_max and lon_min < lon < lon_max for lat, lon in positions)


def test_every_valid_sample_meets_the_contract() -> None:
    messages = run(duration_s=300, faults=HEAVY_FAULTS, batch=4)
    checked: Counter[str] = Counter()
    for message, sample in valid_samples(messages):
        assert TOPIC.fullmatch(message.topic), message.topic
        assert contract_violations(message.stream, sample) == [], sample
        assert sample["device_type"] in DEVICE_TYPES
        checked[message.stream] += 1
    assert set(checked) == set(STREAMS)


def test_devices_move_stop_drain_and_change_mode() -> None:
    messages = run(devices=10, duration_s=900, rate_hz=1.0)
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message, sample in valid_samples(messages):
        if message.stream == "state":
            by_device[message.topic].append(sample)
    types = Counter(s[0]["device_type"] for s in by_device.values())
    assert {"bus", "shuttle", "robot", "car"} <= set(types)
    operators = {topic.split("/")[1] for topic in by_device}
    assert {"keikyu-bus", "hic-shuttle", "kamata-robotics"} <= operators
    for samples in by_device.values():
        assert samples[-1]["odometer_m"] > samples[0]["odometer_m"]
        assert samples[-1]["battery_pct"] < samples[0]["battery_pct"] or samples[-1]["battery_pct"] > 90
        assert {"autonomous", "stopped"} <= {s["mode"] for s in samples}
        assert max(s["speed_mps"] for s in samples) <= 13
    robot_speeds = [s["speed_mps"] for v in by_device.values() for s in v if s["device_type"] == "robot"]
    assert max(robot_speeds) < 2.0


def test_events_come_at_low_rates_with_their_kinds() -> None:
    messages = run(devices=10, duration_s=900, rate_hz=1.0)
    kinds = Counter(s["kind"] for m, s in valid_samples(messages) if m.stream == "event")
    assert {"door", "delivery_start", "delivery_done"} <= set(kinds)
    assert set(kinds) <= set(EVENT_KINDS)
    state = sum(1 for m in messages if m.stream == "state")
    assert sum(kinds.values()) < state / 10


def test_network_degrades_away_from_cell_sites() -> None:
    import random

    from corridorhub.simulator.radio import CELL_SITES, measure

    rng = random.Random(1)
    site = CELL_SITES[2]
    near = [measure(site.lat + 0.0003, site.lon, rng) for _ in range(200)]
    far = [measure(site.lat + 0.0003, site.lon - 0.012, rng) for _ in range(200)]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    assert mean([m.rsrp_dbm for m in near]) > mean([m.rsrp_dbm for m in far]) + 10
    assert mean([m.dl_mbps for m in near]) > mean([m.dl_mbps for m in far])
    assert mean([m.rtt_ms for m in near]) <= mean([m.rtt_ms for m in far])


def test_network_comes_at_a_fifth_of_the_state_rate() -> None:
    streams = Counter(m.stream for m in run(devices=10, duration_s=100))
    assert streams["network"] * 5 == streams["state"]


def test_both_ts_formats_and_extra_fields_appear() -> None:
    messages = run()
    formats = Counter(type(s["ts"]).__name__ for _, s in valid_samples(messages))
    assert formats["int"] > 0 and formats["str"] > 0
    rfc = [s["ts"] for _, s in valid_samples(messages) if isinstance(s["ts"], str)]
    assert all(ts.endswith("+09:00") for ts in rfc)
    for message, sample in valid_samples(messages):  # without skew, ts is the send time
        assert abs(ts_ms(sample["ts"]) - (START_MS + message.send_at * 1000)) <= 1
    assert any("firmware" in s for _, s in valid_samples(messages))


# -- seq, gaps, duplicates, reordering -------------------------------------------------------------
def test_seq_counts_from_zero_without_holes_when_there_are_no_faults() -> None:
    seqs: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for key in (k for m in run() for k in m.valid_keys):
        seqs[key[:3]].append(key[3])
    assert all(v == list(range(len(v))) for v in seqs.values())


def test_seq_increases_per_device_and_stream_among_undisturbed_messages() -> None:
    messages = run(faults=HEAVY_FAULTS, batch=2)
    last: dict[tuple[str, str, str], int] = {}
    for m in messages:
        if m.duplicate or {"late", "reorder"} & set(m.faults):
            continue
        for operator, device_id, stream, seq, _ts in m.valid_keys:
            key = (operator, device_id, stream)
            assert seq > last.get(key, -1)
            last[key] = seq


def test_gaps_are_never_sent_and_leave_holes() -> None:
    simulation = Simulation(SimConfig(12, 2.0, 60.0, 7, START, faults=FaultRates(gap=0.05)))
    messages = list(simulation)
    gaps = set(simulation.stats.gaps)
    assert len(gaps) > 10
    sent = expected_rows(messages)
    assert not gaps & sent
    per_key: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    for key in sent | gaps:
        per_key[key[:3]].add(key[3])
    assert all(v == set(range(len(v))) for v in per_key.values())


def test_duplicates_resend_an_earlier_payload() -> None:
    messages = run(faults=FaultRates(duplicate=0.05, late=0.02, reorder=0.05))
    duplicates = [m for m in messages if m.duplicate]
    assert len(duplicates) > 10
    seen: set[tuple[str, bytes]] = set()
    for m in messages:
        if m.duplicate:
            assert (m.topic, m.payload) in seen
        else:
            assert (m.topic, m.payload) not in seen
            seen.add((m.topic, m.payload))
    assert len(expected_rows(messages)) == sum(len(m.valid_keys) for m in messages if not m.duplicate)


def test_late_reordered_and_skewed_samples_are_still_valid() -> None:
    messages = run(faults=FaultRates(late=0.02, reorder=0.05, skew=0.05), duration_s=600, devices=4)
    kinds = Counter(f for m in messages for f in m.faults)
    assert kinds["late"] and kinds["reorder"] and kinds["skew"]
    for m in messages:
        if "late" in m.faults:
            sample = samples_of(m)[-1]
            delay_s = m.send_at - (ts_ms(sample["ts"]) - START_MS) / 1000
            assert delay_s >= 60 - 180 or m.send_at == 600.0  # skew can move ts by up to 3 minutes
        assert m.clean
    skewed = [(m, s) for m, s in valid_samples(messages) if "skew" in m.faults]
    offsets = [
        abs(ts_ms(s["ts"]) - (START_MS + m.send_at * 1000)) for m, s in skewed if "late" not in m.faults
    ]
    assert max(offsets) >= 5000


# -- malformed payloads with their reasons ---------------------------------------------------------
def test_every_malformed_kind_appears_with_one_unambiguous_reason() -> None:
    messages = run(faults=FaultRates(malformed=0.2))
    seen: dict[str, set[str]] = defaultdict(set)
    for m in messages:
        for fault in m.faults:
            if fault.startswith("malformed:"):
                seen[fault.split(":", 1)[1]].update(r for _, r in m.expected_quarantine)
    assert set(seen) == set(MALFORMED_KINDS)
    for kind, reasons in seen.items():
        assert reasons == {MALFORMED_KINDS[kind]}, kind
        assert reasons <= set(QUARANTINE_REASONS)

    def of(kind: str) -> list[SimMessage]:
        return [m for m in messages if f"malformed:{kind}" in m.faults]

    assert all(m.payload == b"" for m in of("empty"))
    for m in of("not_utf8"):
        with pytest.raises(UnicodeDecodeError):
            m.payload.decode()
    for m in of("invalid_json") + of("non_finite"):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(m.payload)
    assert all(re.search(rb":-?(NaN|Infinity)", m.payload) for m in of("non_finite"))
    assert all(len(m.payload) > 2**20 for m in of("oversized"))
    for m in of("batch_too_large"):
        assert len(orjson.loads(m.payload)) == MAX_BATCH_SAMPLES + 1 and len(m.payload) < 2**20
    for m in of("bad_topic") + of("unknown_stream"):
        assert m.topic.count("/") == 3 and not TOPIC.fullmatch(m.topic)
    for kind in ("missing_ts", "missing_field", "wrong_type", "out_of_range", "invalid_value", "invalid_ts"):
        for m in of(kind):
            assert TOPIC.fullmatch(m.topic)
            assert len(contract_violations(m.stream, orjson.loads(m.payload))) == 1, m.payload
    assert all("ts" not in orjson.loads(m.payload) for m in of("missing_ts"))
    assert all(not m.valid_keys for m in messages if m.expected_reason)


def test_batches_hold_k_samples_and_a_bad_sample_is_marked_alone() -> None:
    simulation = Simulation(SimConfig(12, 2.0, 60.0, 7, START, batch=7, faults=FaultRates(malformed=0.3)))
    messages = list(simulation)
    batches = [m for m in messages if m.expected_reason is None]
    for m in batches:
        samples = samples_of(m)
        assert isinstance(orjson.loads(m.payload), list)
        assert len(samples) == len(m.sample_reasons) == len(m.valid_keys) + sum(map(bool, m.sample_reasons))
        assert sum(map(bool, m.sample_reasons)) <= 1
        if m.send_at < 60.0:  # the last batches of the run may be short
            assert len(m.valid_keys) == 7
        assert len({k[:3] for k in m.valid_keys}) <= 1  # one device and stream
    mixed = [m for m in batches if any(m.sample_reasons)]
    assert len(mixed) > 10
    for m in mixed:
        for sample, reason in zip(samples_of(m), m.sample_reasons, strict=True):
            bad = not isinstance(sample, dict) or bool(contract_violations(m.stream, sample))
            assert bad == (reason is not None), (sample, reason)
            assert not isinstance(sample, dict) or reason is not None or "seq" in sample
    quarantined = sum(len(m.expected_quarantine) for m in messages)
    assert quarantined == sum(simulation.stats.quarantined.values())


def _decoder_disagreements(messages: list[SimMessage]) -> list[tuple[str, Any, Any]]:
    from ingest.decode import Decoder, RawMessage

    decoder = Decoder()
    received_us = RECEIVED_MS * 1000
    out = []
    for m in messages:
        decoded = decoder.decode([RawMessage(m.topic, m.payload, received_us)])
        q = decoded.quarantine
        records = zip(q.column("sample_index").to_pylist(), q.column("reason").to_pylist(), strict=True)
        got = sorted(records, key=str)
        if got != sorted(m.expected_quarantine, key=str) or decoded.row_count != len(m.valid_keys):
            out.append((m.payload[:120].decode(errors="replace"), m.expected_quarantine, got))
    return out


def test_the_ingest_decoder_agrees_with_the_ground_truth() -> None:
    messages = run(faults=HEAVY_FAULTS) + run(faults=HEAVY_FAULTS, batch=5)
    assert _decoder_disagreements(messages) == []


# -- fault specs and the command line --------------------------------------------------------------
def test_fault_specs_parse() -> None:
    assert FaultRates.parse(None) == FaultRates.parse("none") == FaultRates()
    assert FaultRates.parse("default") == DEFAULT_FAULTS
    rates = FaultRates.parse("malformed=0.01, duplicate=0.02,reorder=0.01,late=0.005,skew=0.01,gap=0.01")
    assert rates == FaultRates(0.01, 0.02, 0.01, 0.005, 0.01, 0.01)
    assert FaultRates.parse("default,gap=0.5").gap == 0.5
    assert str(FaultRates.parse("gap=0.5")) == "gap=0.5"
    for bad in ("bogus=0.1", "gap=1.5", "gap=-0.1", "gap", "gap=x"):
        with pytest.raises(ConfigError):
            FaultRates.parse(bad)


def test_config_is_checked() -> None:
    good = SimConfig(devices=1, rate_hz=1, duration_s=1, seed=0, start=START)
    with pytest.raises(ConfigError, match="devices"):
        dataclasses.replace(good, devices=0)
    with pytest.raises(ConfigError, match="rate"):
        dataclasses.replace(good, rate_hz=0)
    with pytest.raises(ConfigError, match="duration"):
        dataclasses.replace(good, duration_s=-1)
    with pytest.raises(ConfigError, match="batch"):
        dataclasses.replace(good, batch=MAX_BATCH_SAMPLES + 1)
    with pytest.raises(ConfigError, match="offset"):
        SimConfig(1, 1, 1, 0, datetime(2025, 4, 1, 9))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--devices", "0"], "--devices"),
        (["--rate", "-1"], "--rate"),
        (["--faults", "bogus=0.1"], "Unknown fault 'bogus'"),
        (["--faults", "gap=1.5"], "between 0 and 1"),
        (["--start", "2025-04-01T09:00:00"], "UTC offset"),
        (["--broker", "http://example.org"], "mqtt://"),
    ],
)
def test_bad_command_line_input_gives_one_clear_line(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no corridorhub.toml
    result = CliRunner().invoke(command, [*args, "--duration", "1"], env={"CORRIDORHUB_BROKER": None})
    assert result.exit_code == (1 if "--broker" in args else 2), result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_dry_run_prints_a_summary() -> None:
    args = [
        "--dry-run",
        "--devices",
        "5",
        "--duration",
        "20",
        "--faults",
        "default",
        "--start",
        START.isoformat(),
    ]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    assert "valid samples:" in result.output and "faults:" in result.output


# -- publishing through a real broker --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerAddress]:
    port = _free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield BrokerAddress("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(10)


class _Subscriber:
    def __init__(self, broker: BrokerAddress) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = lambda _c, _u, msg: self.received.append((msg.topic, bytes(msg.payload)))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.ready.wait(5)

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_publish_delivers_every_message_to_the_broker(mosquitto: BrokerAddress) -> None:
    messages = run(devices=5, duration_s=30, faults=FaultRates(malformed=0.1, duplicate=0.05), batch=2)
    subscriber = _Subscriber(mosquitto)
    try:
        report = publish(messages, mosquitto, realtime=False, client_id="test-publisher", max_inflight=20)
        subscriber.wait_for(len(messages))
    finally:
        subscriber.close()
    assert report.messages == len(messages) and report.rejected == 0
    assert Counter(subscriber.received) == Counter((m.topic, m.payload) for m in messages)


def test_publish_paces_in_real_time(mosquitto: BrokerAddress) -> None:
    messages = run(devices=2, rate_hz=4.0, duration_s=1.5)
    began = time.monotonic()
    report = publish(messages, mosquitto, realtime=True, client_id="test-paced")
    assert report.messages == len(messages)
    assert time.monotonic() - began >= messages[-1].send_at


def test_simulate_command_publishes_and_summarizes(
    mosquitto: BrokerAddress, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    subscriber = _Subscriber(mosquitto)
    args = ["--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}", "--devices", "3", "--duration", "10"]
    args += ["--fast", "--start", START.isoformat()]
    try:
        result = CliRunner().invoke(command, args, env={"CORRIDORHUB_BROKER": None})
        expected = run(devices=3, rate_hz=1.0, duration_s=10, seed=0)
        subscriber.wait_for(len(expected))
    finally:
        subscriber.close()
    assert result.exit_code == 0, result.output
    assert f"{len(expected)} messages" in result.output
    assert subscriber.received == [(m.topic, m.payload) for m in expected]


def test_unreachable_broker_is_a_broker_error() -> None:
    with pytest.raises(BrokerError, match="Cannot reach"):
        publish(run(devices=1, duration_s=1), BrokerAddress("127.0.0.1", _free_port()), realtime=False)


def test_summary_counts_match_the_messages() -> None:
    simulation = Simulation(SimConfig(8, 2.0, 60.0, 3, START, faults=DEFAULT_FAULTS))
    messages = list(simulation)
    stats = simulation.stats
    assert stats.messages == len(messages)
    assert stats.valid_samples == len(expected_rows(messages))
    assert json.dumps(dict(stats.samples))


def _on_a_terminal(args: list[str], cwd: Path, size: tuple[int, int]) -> tuple[int, str]:
    """Run ``args`` on a pseudo-terminal of ``size`` (rows, columns); its exit code and all it printed."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    process = subprocess.Popen(args, cwd=cwd, stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    return process.wait(60), b"".join(chunks).decode("utf-8", errors="replace")


@pytest.mark.parametrize("size", [(30, 100), (0, 0)], ids=["30x100", "a terminal that reports no size"])
def test_simulate_shows_a_progress_bar_on_a_terminal(
    mosquitto: BrokerAddress, tmp_path: Path, size: tuple[int, int]
) -> None:
    args = [
        sys.executable,
        "-m",
        "corridorhub",
        "simulate",
        "--broker",
        f"mqtt://{mosquitto.host}:{mosquitto.port}",
    ]
    args += ["--devices", "20", "--duration", "300", "--fast", "--start", START.isoformat()]
    code, out = _on_a_terminal(args, tmp_path, size)
    assert code == 0, out
    frames = [frame for frame in re.split(r"[\r\n]", out) if "simulated s" in frame]
    assert frames and frames[0].startswith("simulate:") and frames[-1].rstrip().endswith("]")
    assert re.search(r"\| *\d+/300 simulated s \[", frames[-1])
    assert "messages (" in out and "valid samples:" in out


def test_without_a_terminal_progress_is_a_line_every_few_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    clock = [0.0]
    progress = SendProgress(600, terminal=False, every_s=10, clock=lambda: clock[0])
    messages = run(devices=2, rate_hz=1.0, duration_s=600)
    with progress:
        for message in messages:
            clock[0] = message.send_at / 20  # a run that takes 30 s
            progress(message)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # at 10 s and 20 s: none before the first 10 s, none for the last few
    assert lines[0].startswith("simulate: 200 of 600 simulated s sent (33%), ")
    assert all(
        re.fullmatch(r"simulate: \d+ of 600 simulated s sent \(\d+%\), [\d,]+ messages", ln) for ln in lines
    )


# -- device restarts -------------------------------------------------------------------------------
def test_a_restart_starts_every_counter_of_the_device_again_with_later_timestamps() -> None:
    simulation = Simulation(SimConfig(6, 2.0, 300.0, 5, START, faults=FaultRates(restart=0.01)))
    messages = list(simulation)
    stats = simulation.stats
    assert len(stats.restarts) == stats.faults["restart"] >= 5
    per_stream: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for m in messages:
        for operator, device_id, stream, seq, ts in m.valid_keys:
            per_stream[(operator, device_id, stream)].append((ts, seq))
    reused = 0
    for key, samples in per_stream.items():
        seqs = [seq for _, seq in sorted(samples)]  # in time order
        reused += len(seqs) - len(set(seqs))
        assert all(b in (a + 1, 0) for a, b in itertools.pairwise(seqs)), "a counter goes on or back to 0"
        assert len(stats.seq_runs[key]) == 1 + sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
    assert reused > 100  # seq values repeat, with new timestamps
    assert len(expected_rows(messages)) == stats.valid_samples  # every sample still distinct
    assert stats.seq_gaps == 0
