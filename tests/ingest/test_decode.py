"""The decoder: every message becomes rows or quarantine records with the right reason, never an exception."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.decode import Decoder, RawMessage
from store.schema import QUARANTINE_REASONS, SCHEMAS, STREAMS

NOW_US = int(time.time() * 1_000_000)
TS_MS = NOW_US // 1000 - 60_000


def msg(topic: str, payload: bytes | object) -> RawMessage:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return RawMessage(topic, body, NOW_US)


def state(**fields: object) -> dict[str, object]:
    sample: dict[str, object] = {"ts": TS_MS, "seq": 1, "lat": 35.55, "lon": 139.75}
    sample.update(fields)
    return {k: v for k, v in sample.items() if v is not ...}


def decode_one(topic: str, payload: bytes | object) -> tuple[list[dict], list[dict]]:
    batch = Decoder().decode([msg(topic, payload)])
    rows = [r for t in batch.rows.values() for r in t.to_pylist()]
    return rows, batch.quarantine.to_pylist()


def reason_of(topic: str, payload: bytes | object) -> str:
    rows, quarantined = decode_one(topic, payload)
    assert rows == [], rows
    assert len(quarantined) == 1, quarantined
    return quarantined[0]["reason"]


T = "corridor/keikyu-bus/bus_01/state"


def test_valid_state_sample_becomes_a_typed_row() -> None:
    rows, quarantined = decode_one(T, state(speed_mps=4.5, mode="autonomous", heading_deg=359.9))
    assert quarantined == []
    (row,) = rows
    assert row["operator"] == "keikyu-bus" and row["device_id"] == "bus_01"
    assert row["ts"] == datetime.fromtimestamp(TS_MS / 1000, UTC)
    assert row["speed_mps"] == 4.5 and row["mode"] == "autonomous" and row["extra"] is None
    assert row["date"] == row["ts"].date()
    assert row["received_at"] == datetime.fromtimestamp(NOW_US / 1e6, UTC)


def test_rfc3339_with_offset_is_converted_to_utc_microseconds() -> None:
    rows, _ = decode_one(T, state(ts="2026-11-26T09:00:00.123456+09:00"))
    assert rows[0]["ts"] == datetime(2026, 11, 26, 0, 0, 0, 123456, tzinfo=UTC)


def test_output_schema_is_the_declared_schema() -> None:
    batch = Decoder().decode([msg(T, state())])
    assert batch.rows["state"].schema == SCHEMAS["state"].arrow
    assert batch.quarantine.schema == SCHEMAS["quarantine"].arrow
    assert batch.rows["state"].schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_fields_outside_the_contract_are_kept_in_extra() -> None:
    rows, _ = decode_one(T, state(firmware="2.3.1", payload_note={"a": [1, 2]}))
    assert orjson.loads(rows[0]["extra"]) == {"firmware": "2.3.1", "payload_note": {"a": [1, 2]}}


def test_a_hub_column_name_in_the_payload_goes_to_extra_and_does_not_override_the_topic() -> None:
    rows, _ = decode_one(T, state(device_id="spoofed", operator="evil"))
    assert rows[0]["device_id"] == "bus_01" and rows[0]["operator"] == "keikyu-bus"
    assert orjson.loads(rows[0]["extra"]) == {"device_id": "spoofed", "operator": "evil"}


def test_batch_keeps_good_samples_and_quarantines_each_bad_one_with_its_index() -> None:
    payload = [state(seq=1), state(seq=2, lat=95.0), state(seq=3, heading_deg=360), state(seq=4), 7]
    rows, quarantined = decode_one(T, payload)
    assert [r["seq"] for r in rows] == [1, 4]
    got = sorted((q["sample_index"], q["reason"]) for q in quarantined)
    assert got == [(1, "out_of_range"), (2, "out_of_range"), (4, "not_an_object")]
    bad = next(q for q in quarantined if q["sample_index"] == 1)
    assert orjson.loads(bad["payload"])["lat"] == 95.0
    assert "lat" in bad["message"]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (T, b"", "empty_payload"),
        (T, b"\xff\xfe{}", "not_utf8"),
        (T, b'{"ts": 1', "invalid_json"),
        (T, b'{"ts": NaN, "lat": 1, "lon": 2}', "non_finite_number"),
        (T, b'{"ts": 1, "lat": Infinity, "lon": 2}', "non_finite_number"),
        (T, b'{"ts": 1, "lat": -Infinity, "lon": 2}', "non_finite_number"),
        (T, b'"just a string"', "not_an_object"),
        (T, b"null", "not_an_object"),
        (T, b"[]", "empty_batch"),
        (T, [state()] * 10_001, "batch_too_large"),
        (T, state(ts=...), "missing_field"),
        (T, state(lat=None), "missing_field"),
        (T, state(lon=...), "missing_field"),
        (T, state(ts="yesterday"), "invalid_ts"),
        (T, state(ts="2026-11-26T12:00:00"), "invalid_ts"),
        (T, state(ts=1.5e12), "invalid_ts"),
        (T, state(ts=True), "invalid_ts"),
        (T, state(ts=946_684_799_000), "ts_out_of_range"),
        (T, state(ts=NOW_US // 1000 + 2 * 86_400_000), "ts_out_of_range"),
        (T, state(ts=2**62), "ts_out_of_range"),
        (T, state(lat="35.5"), "wrong_type"),
        (T, state(speed_mps=True), "wrong_type"),
        (T, state(seq=1.5), "wrong_type"),
        (T, state(seq=-1), "out_of_range"),
        (T, state(seq=2**63), "out_of_range"),
        (T, b'{"ts": 1, "seq": 123456789012345678901234567890, "lat": 1, "lon": 1}', "wrong_type"),
        (T, state(mode=["autonomous"]), "wrong_type"),
        (T, state(lon=180.5), "out_of_range"),
        (T, state(heading_deg=360.0), "out_of_range"),
        (T, state(battery_pct=100.01), "out_of_range"),
        (T, state(speed_mps=-0.1), "out_of_range"),
        (T, state(mode="teleported"), "invalid_value"),
        (T, state(device_type="hovercraft"), "invalid_value"),
        ("corridor/op/dev/event", {"ts": TS_MS, "kind": "door", "detail": "x" * 1025}, "invalid_value"),
        ("corridor/op/dev/event", {"ts": TS_MS}, "missing_field"),
        ("corridor/op/dev/event", {"ts": TS_MS, "kind": "alien"}, "invalid_value"),
        ("corridor/op/dev/network", {"ts": TS_MS, "rsrp_dbm": -157}, "out_of_range"),
        ("corridor/op/dev/network", {"ts": TS_MS, "sinr_db": 40.5}, "out_of_range"),
        ("corridor/op/dev/network", {"ts": TS_MS, "rtt_ms": -1}, "out_of_range"),
        ("corridor/op/dev/network", {"ts": TS_MS, "rat": "5G"}, "invalid_value"),
        ("corridor/op/dev/weather", state(), "unknown_stream"),
        ("corridor/op/dev", state(), "bad_topic"),
        ("corridor/op/dev/state/extra", state(), "bad_topic"),
        ("corridor/o p/dev/state", state(), "bad_topic"),
        ("corridor/" + "x" * 65 + "/dev/state", state(), "bad_topic"),
        ("other/op/dev/state", state(), "bad_topic"),
    ],
)
def test_each_kind_of_bad_input_gets_its_reason(topic: str, payload: object, reason: str) -> None:
    assert reason in QUARANTINE_REASONS
    assert reason_of(topic, payload) == reason


def test_oversized_payload_is_quarantined_truncated_to_the_limit() -> None:
    decoder = Decoder(max_payload_bytes=1000)
    batch = decoder.decode([msg(T, [state(seq=i) for i in range(100)])])
    (q,) = batch.quarantine.to_pylist()
    assert q["reason"] == "payload_too_large" and len(q["payload"]) == 1000


def test_edge_values_are_accepted() -> None:
    edge = [
        state(seq=0, lat=-90, lon=-180, heading_deg=0, battery_pct=0, speed_mps=0),
        state(seq=2**63 - 1, lat=90, lon=180, heading_deg=359.999999, battery_pct=100),
        state(seq=3, ts="2000-01-01T00:00:00Z"),
        state(seq=4, ts="2026-11-26T12:00:00.123456789+09:00"),
    ]
    rows, quarantined = decode_one(T, edge)
    assert quarantined == []
    assert len(rows) == 4
    net = {"ts": TS_MS, "rsrp_dbm": -156, "rsrq_db": 20, "sinr_db": -23, "cell_id": 4_411_234_567}
    rows, quarantined = decode_one("corridor/op/dev/network", net)
    assert quarantined == [] and rows[0]["cell_id"] == "4411234567"


def test_one_sample_of_each_stream_in_one_flush() -> None:
    messages = [
        msg("corridor/a/d1/state", state()),
        msg("corridor/a/d1/event", {"ts": TS_MS, "kind": "disengagement", "severity": "warning"}),
        msg("corridor/a/d1/network", {"ts": TS_MS, "rat": "NR_SA", "rsrp_dbm": -90.5}),
        msg("corridor/a/d1/state", b"{"),
    ]
    batch = Decoder().decode(messages)
    assert {s: t.num_rows for s, t in batch.rows.items()} == {"state": 1, "event": 1, "network": 1}
    assert batch.quarantine.column("reason").to_pylist() == ["invalid_json"]


def test_a_boolean_among_numbers_is_a_wrong_type_not_one() -> None:
    messages = [msg(T, state(seq=1, speed_mps=0.5)), msg(T, state(seq=2, speed_mps=True))]
    batch = Decoder().decode(messages)
    assert batch.rows["state"].column("seq").to_pylist() == [1]
    assert batch.quarantine.column("reason").to_pylist() == ["wrong_type"]


def test_mixed_types_in_one_column_across_messages_only_fail_the_odd_ones() -> None:
    messages = [msg(T, state(seq=i, speed_mps=float(i))) for i in range(50)]
    messages.append(msg(T, state(seq=99, speed_mps="fast")))
    batch = Decoder().decode(messages)
    assert batch.rows["state"].num_rows == 50
    assert batch.quarantine.column("reason").to_pylist() == ["wrong_type"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["ts", "seq", "lat", "lon", "speed_mps", "mode", "kind", "rsrp_dbm", "detail", "cell_id", "x"]
)
samples = st.dictionaries(field_names, json_values | st.integers(0, 2**45), max_size=8)
topics = (
    st.sampled_from([T, "corridor/a/b/event", "corridor/a/b/network", "corridor/a/b/nope", "x"]) | st.text()
)


def _accounted(messages: list[RawMessage]) -> None:
    batch = Decoder().decode(messages)
    for stream, table in batch.rows.items():
        assert stream in STREAMS
        assert table.schema == SCHEMAS[stream].arrow
        assert table.column("ts").null_count == 0
    reasons = set(batch.quarantine.column("reason").to_pylist())
    assert reasons <= set(QUARANTINE_REASONS)
    assert "internal_error" not in reasons
    # Every message is accounted for: it gave rows, quarantine records, or both.
    assert batch.row_count + batch.quarantine.num_rows >= len(messages)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(topics, st.binary(max_size=300)), max_size=5))
def test_arbitrary_bytes_give_rows_or_a_reason(pairs: list[tuple[str, bytes]]) -> None:
    _accounted([RawMessage(t, p, NOW_US) for t, p in pairs])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(topics, samples | st.lists(samples, max_size=4) | json_values), max_size=6))
def test_arbitrary_json_gives_rows_or_a_reason(pairs: list[tuple[str, object]]) -> None:
    messages = [RawMessage(t, orjson.dumps(v), NOW_US) for t, v in pairs]
    batch = Decoder().decode(messages)
    _accounted(messages)
    # Nothing is lost: each sample object becomes exactly one row or one quarantine record.
    expected = 0
    for topic, value in pairs:
        valid_topic = topic in (T, "corridor/a/b/event", "corridor/a/b/network")
        if valid_topic and isinstance(value, list) and 0 < len(value) <= 10_000:
            expected += len(value)
        else:
            expected += 1
    assert batch.row_count + batch.quarantine.num_rows == expected


@settings(max_examples=200, deadline=None)
@given(
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    speed=st.floats(0, 1e6),
    seq=st.integers(0, 2**63 - 1),
)
def test_any_in_range_state_sample_is_accepted_exactly(
    lat: float, lon: float, speed: float, seq: int
) -> None:
    rows, quarantined = decode_one(T, state(lat=lat, lon=lon, speed_mps=speed, seq=seq))
    assert quarantined == []
    assert rows[0]["lat"] == lat and rows[0]["lon"] == lon and rows[0]["seq"] == seq
    assert not math.isnan(rows[0]["speed_mps"])
