"""Turn raw MQTT messages into Arrow tables of samples, or quarantine records with a reason.

Decoding never raises: whatever the bytes, every message ends up as rows, as quarantine records,
or both (a batch keeps its good samples and quarantines each bad one on its own).

The work is done per flush, not per message: samples of all messages of one stream are gathered and
each column is built and checked as a whole (``ingest._columns``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from ingest._columns import Checks, LazyValues, check_column, column_values, infer, ts_microseconds
from store.geo import assign_zone
from store.schema import (
    IDENTIFIER_PATTERN,
    MAX_BATCH_SAMPLES,
    QUARANTINE,
    SCHEMAS,
    STREAMS,
    TIMESTAMP,
)

_TOPIC = re.compile(rf"corridor/({IDENTIFIER_PATTERN})/({IDENTIFIER_PATTERN})/([^/]*)")
_TS_MIN_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z
_DAY_US = 86_400_000_000


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One MQTT message as received; ``received_at_us`` is epoch microseconds (UTC)."""

    topic: str
    payload: bytes
    received_at_us: int


@dataclass
class DecodedBatch:
    """What a list of messages decodes to: rows per stream and quarantine records."""

    rows: dict[str, pa.Table]
    quarantine: pa.Table

    @property
    def row_count(self) -> int:
        return sum(t.num_rows for t in self.rows.values())


@dataclass
class _Topic:
    operator: str | None
    device_id: str | None
    stream: str | None
    reason: str | None = None
    message: str = ""


@dataclass
class _Quarantine:
    received_at: list[int] = field(default_factory=list)
    topic: list[str] = field(default_factory=list)
    operator: list[str | None] = field(default_factory=list)
    device_id: list[str | None] = field(default_factory=list)
    stream: list[str | None] = field(default_factory=list)
    payload: list[bytes] = field(default_factory=list)
    sample_index: list[int | None] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    message: list[str] = field(default_factory=list)

    def add(
        self, msg: RawMessage, topic: _Topic, payload: bytes, index: int | None, reason: str, text: str
    ) -> None:
        self.received_at.append(msg.received_at_us)
        self.topic.append(msg.topic)
        self.operator.append(topic.operator)
        self.device_id.append(topic.device_id)
        self.stream.append(topic.stream)
        self.payload.append(payload)
        self.sample_index.append(index)
        self.reason.append(reason)
        self.message.append(text)

    def table(self) -> pa.Table:
        schema = SCHEMAS[QUARANTINE].arrow
        received = pa.array(self.received_at, pa.int64()).cast(TIMESTAMP)
        columns = {
            "received_at": received,
            "topic": pa.array(self.topic, pa.string()),
            "operator": pa.array(self.operator, pa.string()),
            "device_id": pa.array(self.device_id, pa.string()),
            "stream": pa.array(self.stream, pa.string()),
            "payload": pa.array(self.payload, pa.binary()),
            "sample_index": pa.array(self.sample_index, pa.int32()),
            "reason": pa.array(self.reason, pa.string()),
            "message": pa.array(self.message, pa.string()),
            "date": received.cast(pa.date32()),
        }
        return pa.table([columns[f.name] for f in schema], schema=schema)


@dataclass
class _StreamRows:
    samples: list[dict[str, Any]] = field(default_factory=list)
    message: list[int] = field(default_factory=list)  # index into the message list
    index: list[int | None] = field(default_factory=list)  # position within a batch array


class Decoder:
    """Decodes lists of messages; keeps a cache of parsed topics (devices repeat them)."""

    def __init__(self, max_payload_bytes: int = 2**20, topic_cache_size: int = 100_000) -> None:
        self.max_payload_bytes = max_payload_bytes
        self._topics: dict[str, _Topic] = {}
        self._topic_cache_size = topic_cache_size

    def topic(self, topic: str) -> _Topic:
        parsed = self._topics.get(topic)
        if parsed is None:
            parsed = _parse_topic(topic)
            if len(self._topics) >= self._topic_cache_size:
                self._topics.clear()
            self._topics[topic] = parsed
        return parsed

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        quarantine = _Quarantine()
        per_stream = {s: _StreamRows() for s in STREAMS}
        topics: list[_Topic] = []
        for i, msg in enumerate(messages):
            topic = self.topic(msg.topic)
            topics.append(topic)
            if topic.reason is not None:
                quarantine.add(msg, topic, msg.payload, None, topic.reason, topic.message)
                continue
            self._split_payload(i, msg, topic, per_stream[topic.stream or ""], quarantine)
        rows = {}
        for stream, gathered in per_stream.items():
            if gathered.samples:
                rows[stream] = _build_stream(stream, gathered, messages, topics, quarantine)
        return DecodedBatch(rows=rows, quarantine=quarantine.table())

    def decode_or_quarantine(self, message: RawMessage) -> DecodedBatch:
        """Decode one message; should the decoder itself fail, quarantine it as internal_error."""
        try:
            return self.decode([message])
        except Exception as exc:  # noqa: BLE001 - the one place a decoder bug is turned into data
            quarantine = _Quarantine()
            quarantine.add(
                message,
                _Topic(None, None, None),
                message.payload,
                None,
                "internal_error",
                f"{type(exc).__name__}: {str(exc)[:200]}",
            )
            return DecodedBatch(rows={}, quarantine=quarantine.table())

    def _split_payload(
        self, i: int, msg: RawMessage, topic: _Topic, into: _StreamRows, quarantine: _Quarantine
    ) -> None:
        payload = msg.payload
        if not payload:
            quarantine.add(msg, topic, payload, None, "empty_payload", "payload is empty")
            return
        if len(payload) > self.max_payload_bytes:
            quarantine.add(
                msg,
                topic,
                payload[: self.max_payload_bytes],
                None,
                "payload_too_large",
                f"payload is {len(payload)} bytes, limit {self.max_payload_bytes} (stored truncated)",
            )
            return
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            reason, text = _classify_json_error(payload, exc)
            quarantine.add(msg, topic, payload, None, reason, text)
            return
        if isinstance(value, dict):
            into.samples.append(value)
            into.message.append(i)
            into.index.append(None)
            return
        if not isinstance(value, list):
            kind = type(value).__name__ if value is not None else "null"
            quarantine.add(msg, topic, payload, None, "not_an_object", f"payload is a JSON {kind}")
            return
        if not value:
            quarantine.add(msg, topic, payload, None, "empty_batch", "batch array is empty")
            return
        if len(value) > MAX_BATCH_SAMPLES:
            quarantine.add(
                msg,
                topic,
                payload,
                None,
                "batch_too_large",
                f"batch holds {len(value)} samples, limit {MAX_BATCH_SAMPLES}",
            )
            return
        if all(type(sample) is dict for sample in value):
            into.samples.extend(value)
            into.message.extend([i] * len(value))
            into.index.extend(range(len(value)))
            return
        for j, sample in enumerate(value):
            if isinstance(sample, dict):
                into.samples.append(sample)
                into.message.append(i)
                into.index.append(j)
            else:
                kind = type(sample).__name__ if sample is not None else "null"
                quarantine.add(
                    msg, topic, orjson.dumps(sample), j, "not_an_object", f"sample {j} is a JSON {kind}"
                )


def _parse_topic(topic: str) -> _Topic:
    match = _TOPIC.fullmatch(topic)
    if match is None:
        return _Topic(
            None, None, None, "bad_topic", f"topic {topic[:200]!r} is not corridor/operator/device/stream"
        )
    operator, device_id, stream = match.groups()
    if stream not in STREAMS:
        return _Topic(
            operator,
            device_id,
            None,
            "unknown_stream",
            f"stream {stream[:64]!r} is not one of {', '.join(STREAMS)}",
        )
    return _Topic(operator, device_id, stream)


def _classify_json_error(payload: bytes, exc: orjson.JSONDecodeError) -> tuple[str, str]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        return "not_utf8", f"payload is not UTF-8: {err.reason} at byte {err.start}"

    def _refuse_constant(name: str) -> float:
        raise _NonFinite(name)

    try:
        json.loads(text, parse_constant=_refuse_constant)
    except _NonFinite as nf:
        return "non_finite_number", f"payload holds {nf.args[0]}, which JSON does not allow"
    except (ValueError, RecursionError):
        pass
    return "invalid_json", f"payload is not valid JSON: {str(exc)[:200]}"


class _NonFinite(Exception):
    pass


_ABSENT = object()  # a field the sample does not have (JSON null is None)


def _dump_sample(sample: dict[str, Any], ts: Any) -> bytes:
    """The sample as JSON again, with the ts that decoding took out of it."""
    return orjson.dumps(sample if ts is _ABSENT else {"ts": ts, **sample})


def _build_stream(
    stream: str,
    gathered: _StreamRows,
    messages: Sequence[RawMessage],
    topics: Sequence[_Topic],
    quarantine: _Quarantine,
) -> pa.Table:
    schema = SCHEMAS[stream]
    samples = gathered.samples
    n = len(samples)
    checks = Checks(n)
    payload_columns = schema.payload_columns
    known = frozenset(c.name for c in payload_columns)
    arrays: dict[str, pa.Array] = {}

    # Arrow reads all samples at once into a struct when every field has one JSON type throughout;
    # otherwise each column is read on its own.  ts is taken out first: operators send it as text or
    # as an integer, and a mixed ts would keep every other column off the fast path.
    ts_raw = [sample.pop("ts", _ABSENT) for sample in samples]
    struct = infer(samples)
    may_hold_booleans = any(
        b"true" in messages[m].payload or b"false" in messages[m].payload for m in set(gathered.message)
    )
    struct_fields = set(struct.type.names) if struct is not None else set()
    ts_values = LazyValues.of([None if v is _ABSENT else v for v in ts_raw])
    for column in payload_columns:  # in schema order: a row's reason is its first failing column
        if column.name == "ts":
            arrays["ts"] = ts_microseconds(infer(ts_values.list()), ts_values, checks)
            check_column(column, arrays["ts"], ts_values, checks)
            continue
        values = LazyValues(samples, column.name)
        if struct is None:
            inferred = infer(values.list())
        elif column.name in struct_fields:
            inferred = struct.field(column.name)
        else:
            inferred = pa.nulls(n)
        arrays[column.name] = column_values(column, inferred, values, checks, may_hold_booleans)
        check_column(column, arrays[column.name], values, checks)

    message_index = np.asarray(gathered.message, dtype=np.int64)
    received = np.fromiter((m.received_at_us for m in messages), dtype=np.int64, count=len(messages))[
        message_index
    ]
    ts_us = arrays["ts"].to_numpy(zero_copy_only=False)
    ts_valid = ~np.isnan(ts_us.astype("float64"))
    ts_int = np.where(ts_valid, np.nan_to_num(ts_us.astype("float64")), 0).astype(np.int64)
    out_of_range = ts_valid & ((ts_int < _TS_MIN_US) | (ts_int > received + _DAY_US))
    checks.fail_mask(
        out_of_range,
        "ts_out_of_range",
        lambda r: f"ts {samples[r].get('ts')!r} is before 2000 or more than a day after receipt",
    )

    bad = checks.bad
    for r in np.flatnonzero(bad):
        m = gathered.message[r]
        quarantine.add(
            messages[m],
            topics[m],
            _dump_sample(samples[r], ts_raw[r]) if gathered.index[r] is not None else messages[m].payload,
            gathered.index[r],
            checks.reason[r] or "wrong_type",
            checks.text[r],
        )

    keep = ~bad
    keep_idx = np.flatnonzero(keep)
    kept = pa.array(keep)
    if struct is not None and struct_fields <= known:
        extra = pa.nulls(len(keep_idx), pa.string())
    else:
        extra = pa.array(
            [
                orjson.dumps({k: v for k, v in samples[r].items() if k not in known}).decode()
                if not known.issuperset(samples[r])
                else None
                for r in keep_idx
            ],
            pa.string(),
        )
    kept_messages = pa.array(message_index[keep_idx])
    operator = pa.array([t.operator for t in topics], pa.string()).take(kept_messages)
    device = pa.array([t.device_id for t in topics], pa.string()).take(kept_messages)
    ts = arrays["ts"].filter(kept).cast(TIMESTAMP)
    lat = arrays["lat"].filter(kept) if "lat" in arrays else None
    lon = arrays["lon"].filter(kept) if "lon" in arrays else None
    columns: dict[str, pa.Array] = {
        "zone": _zones(lat, lon, len(keep_idx)),
        "operator": operator,
        "device_id": device,
        "extra": extra,
        "received_at": pa.array(received[keep_idx]).cast(TIMESTAMP),
        "date": ts.cast(pa.date32()),
    }
    for column in payload_columns:
        if column.name != "ts":
            columns[column.name] = arrays[column.name].filter(kept)
    columns["ts"] = ts
    arrow_schema = schema.arrow
    return pa.table([columns[f.name] for f in arrow_schema], schema=arrow_schema)


def _zones(lat: pa.Array | None, lon: pa.Array | None, n: int) -> pa.Array:
    if lat is None or lon is None or n == 0 or lat.null_count == n:
        return pa.nulls(n, pa.string())
    return assign_zone(
        lat.to_numpy(zero_copy_only=False).astype("float64"),
        lon.to_numpy(zero_copy_only=False).astype("float64"),
    )
